"""Baselines scored in the same run on the same splits as the model:

- tfidf: character n-gram TF-IDF of the normalized titles (fit on train), for classification (probe and keyword
  zero-shot against the same prompts), attributes, matching, clustering and adult recognition;
- image_hash: the 29-digit image hash of `eclip prepare`, similarity 1 - mean |digit difference| / 9 over the
  25 luminance digits (the size digits change with every resize), for matching;
- untrained: the model's own towers before contrastive training (a pretrained text tower stays pretrained, the
  image tower and both projections are random), for everything.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from eclip.eval.representation import Representation, tower_representation

TFIDF_TASKS = frozenset({"category", "attributes", "matching", "clustering", "adult"})
HASH_TASKS = frozenset({"matching"})
LUMINANCE_DIGITS = 25


def tfidf_representation(splits: dict[str, pa.Table], max_features: int) -> Representation:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2,
                                 max_features=max_features, lowercase=True, dtype=np.float32)
    vectorizer.fit(splits["train"].column("title_norm").to_pylist())
    # Rows come L2-normalized (the vectorizer's default norm), so a dot product is the cosine.
    views = {split: {"text": vectorizer.transform(table.column("title_norm").to_pylist()).tocsr()}
             for split, table in splits.items()}
    return Representation("tfidf", views, primary="text", tasks=TFIDF_TASKS,
                          encode_text=lambda prompts: vectorizer.transform([p.lower() for p in prompts]).tocsr())


def hash_digits(hashes: list[str]) -> np.ndarray:
    """29-digit hashes -> (N, 25) luminance digits as float32."""
    return np.array([[int(d) for d in h[:LUMINANCE_DIGITS]] for h in hashes], dtype=np.float32).reshape(-1, LUMINANCE_DIGITS)


def hash_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 25) and (B, 25) digits -> (A, B) in [0, 1]: 1 - mean absolute digit difference / 9."""
    from scipy.spatial.distance import cdist

    return (1.0 - cdist(a, b, metric="cityblock") / (9.0 * LUMINANCE_DIGITS)).astype(np.float32)


def hash_representation(splits: dict[str, pa.Table]) -> Representation:
    views = {split: {"image": hash_digits(table.column("image_hash").to_pylist())} for split, table in splits.items()}
    return Representation("image_hash", views, primary="image", tasks=HASH_TASKS, similarity=hash_similarity)


def untrained_representation(model_config, train: pa.Table, titles: dict[str, list[str]],
                             thumbnails: dict[str, pa.Array], batch_size: int, seed: int) -> Representation:
    """The same towers as the trained model, freshly initialized (seeded); a from-scratch text tower gets its
    tokenizer trained on the train titles, as training would."""
    from eclip.models import build_model

    torch.manual_seed(seed)
    model, _ = build_model(model_config, train.column("title").to_pylist())
    return tower_representation("untrained", model.eval(), titles, thumbnails, batch_size)
