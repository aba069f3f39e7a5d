"""Synthetic shopping sequences over a real catalogue, and content features from its titles and labels.

The amazon-beauty sequences have no product content, so the cold-start test needs sequences over products that
do: here, users of the fashion-dev catalogue. Each user has a gender, two favourite colours, a usage (casual,
formal, sports...) and three favourite article types; a session starts at a favourite type and moves between
related types (same sub-category, same master category, sometimes across: shirt -> trousers -> shoes -> watch),
picking items by a Zipf popularity skew boosted by the user's colours and usage. Nothing is random per call:
the same seed gives the same sequences.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path

import numpy as np

from eclip.errors import EclipError
from eclip.rec.data import Sequences

_COLUMNS = ("product_id", "title", "category", "attr_gender", "attr_color", "attr_usage")


def read_catalog(path: Path, limit: int | None = None) -> list[dict]:
    """Rows of a catalogue CSV in the fashion-dev layout (product_id, title, category, attr_gender, attr_color,
    attr_usage, ...)."""
    path = Path(path)
    if not path.is_file():
        raise EclipError(f"{path}: no such catalogue")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise EclipError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(itertools.islice(reader, limit))
    return [row for row in rows if row["category"].count(" > ") == 2]


def synthetic_sequences(catalog: list[dict], n_users: int, seed: int = 0, min_len: int = 5,
                        mean_extra_len: float = 7.0, max_len: int = 40) -> Sequences:
    rng = np.random.default_rng(seed)
    n = len(catalog)
    types = sorted({row["category"] for row in catalog})
    type_of = np.array([types.index(row["category"]) for row in catalog])
    gender = np.array([row["attr_gender"] for row in catalog])
    colour = np.array([row["attr_color"] for row in catalog])
    usage = np.array([row["attr_usage"] for row in catalog])
    popularity = 1.0 / (1.0 + rng.permutation(n)) ** 0.8  # Zipf-like skew over a random order

    # Type-to-type affinity: same sub-category 4, same master 1.5, otherwise 0.3 (whole outfits cross masters).
    parts = [t.split(" > ") for t in types]
    affinity = np.array([[4.0 if a[:2] == b[:2] else 1.5 if a[0] == b[0] else 0.3 for b in parts] for a in parts])
    affinity *= np.sqrt(np.bincount(type_of, minlength=len(types)))[None, :]

    genders = Counter(gender)
    gender_names = sorted(g for g in genders if g != "Unisex") or ["Unisex"]
    gender_p = np.array([genders[g] for g in gender_names], dtype=np.float64)
    colours, colour_counts = np.unique(colour, return_counts=True)
    users, sequences = [], []
    for u in range(n_users):
        user_gender = gender_names[rng.choice(len(gender_names), p=gender_p / gender_p.sum())]
        eligible = (gender == user_gender) | (gender == "Unisex")
        favourite_colours = rng.choice(colours, size=2, replace=False, p=colour_counts / colour_counts.sum())
        usages, usage_counts = np.unique(usage[eligible], return_counts=True)
        favourite_usage = rng.choice(usages, p=usage_counts / usage_counts.sum())
        type_sizes = np.bincount(type_of[eligible], minlength=len(types)).astype(np.float64)
        favourite_types = rng.choice(len(types), size=min(3, np.count_nonzero(type_sizes)), replace=False,
                                     p=type_sizes / type_sizes.sum())
        taste = np.ones(len(types))
        taste[favourite_types] = 3.0
        weight = popularity * eligible * np.where(np.isin(colour, favourite_colours), 3.0, 1.0) \
            * np.where(usage == favourite_usage, 2.0, 1.0)
        length = min(max_len, min_len + rng.geometric(1.0 / (1.0 + mean_extra_len)) - 1)
        current, chosen = rng.choice(favourite_types), []
        while len(chosen) < length:
            candidates = np.flatnonzero((type_of == current) & (weight > 0))
            if len(candidates):
                item = rng.choice(candidates, p=weight[candidates] / weight[candidates].sum())
                chosen.append(item)
                weight[item] = 0.0  # no repeat purchases
            step = affinity[current] * taste * (type_sizes > 0)
            step[current] *= 0.5  # a second item of the same type is likely, a third less so
            current = rng.choice(len(types), p=step / step.sum())
        users.append(f"u{u}")
        sequences.append([catalog[i]["product_id"] for i in chosen])
    return Sequences(users, sequences)


def label_text_features(catalog: list[dict], dim: int = 64, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(P, dim) L2-normalized TF-IDF of each product's title and labels, reduced by truncated SVD: a stand-in
    for e-CLIP embeddings that depends only on the catalogue, not on a trained model."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [" ".join([row["title"], row["category"].replace(" > ", " "), row["attr_gender"], row["attr_color"],
                       row["attr_usage"]]) for row in catalog]
    tfidf = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", sublinear_tf=True).fit_transform(texts)
    reduced = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(tfidf).astype(np.float32)
    reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    return [row["product_id"] for row in catalog], reduced


def write_sequences(path: Path, sequences: Sequences) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in zip(sequences.users, sequences.items)))
    return path
