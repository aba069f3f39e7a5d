"""Zero-shot classifiers built from label names only (CLIP's prompt ensembles): each class is the normalized
mean of its prompts' normalized text vectors; a product takes the class whose vector is most similar."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from eclip.eval.similarity import cosine
from eclip.index.vectors import normalize_rows


def name_variants(name: str) -> list[str]:
    """The name as spelled, plus its singular when it reads like a plural ("Tshirts" -> "Tshirt"): catalogues
    name classes in the plural while titles name one product."""
    variants = [name]
    if len(name) > 3 and name.endswith("s") and not name.endswith("ss"):
        variants.append(name[:-1])
    return variants


def class_prompts(label: str, templates: list[str], **fields: str) -> list[str]:
    """`fields` fill named slots such as {name} (the attribute's name) beside the label's {}."""
    return [template.format(variant, **fields) for template in templates for variant in name_variants(label)]


def prompt_classifier(encode_text: Callable, names: list[str], templates: list[str], **fields: str):
    """-> (C, D) unit rows, one per class name (dense or sparse like `encode_text`'s output)."""
    prompts = [class_prompts(label, templates, **fields) for label in names]
    vectors = normalize_rows(encode_text([p for group in prompts for p in group]))  # (sum of prompts, D)
    owner = np.repeat(np.arange(len(names)), [len(group) for group in prompts])
    averaging = sp.csr_matrix((np.ones(len(owner)) / np.bincount(owner)[owner], (owner, np.arange(len(owner)))),
                              shape=(len(names), len(owner)))
    return normalize_rows(averaging @ vectors)


def zero_shot_predict(queries, classifier, names: list[str]) -> np.ndarray:
    """(N, D) product vectors -> (N,) predicted class names."""
    return np.asarray(names, dtype=object)[cosine(queries, classifier).argmax(axis=1)]
