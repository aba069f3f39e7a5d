"""metapath2vec's evaluation (Dong et al. 2017, §4.1-4.2) on products: node classification by category and
clustering NMI, for every embedding in one table.

Classification: a logistic regression on L2-normalized features trains on a stratified fraction of the labelled
products and predicts the rest; macro and micro F1 are averaged over `repeats` splits, the same splits for every
method. Clustering: k-means with as many clusters as categories, NMI against the categories, averaged over
`repeats` seeds. Every method is scored on the same products: those that all of them embed.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import sparse

from eclip.errors import EclipError
from eclip.graph.build import HeteroGraph, build_product_graph, category_levels, load_products
from eclip.graph.config import GraphEvalConfig
from eclip.eval.probe import side_by_side
from eclip.index import EMBEDDINGS_FILE
from eclip.index.vectors import embeddings_columns, product_vectors


@dataclass
class Features:
    name: str
    product_ids: list[str]
    matrix: np.ndarray | sparse.csr_matrix  # (n, d)


def category_labels(products: pa.Table, level: int) -> dict[str, str]:
    """product_id -> the category path cut at `level`; products with a shallower path have no label."""
    if "category" not in products.column_names:
        raise EclipError("products table has no category column: nothing to classify")
    levels = category_levels(products["category"].combine_chunks())
    if level > len(levels):
        raise EclipError(f"label level {level} is deeper than the category paths ({len(levels)} levels); lower --label-level")
    ids = products["product_id"].cast(pa.string()).to_pylist()
    return {pid: label for pid, label in zip(ids, levels[level - 1].to_pylist()) if label is not None}


def tfidf_features(products: pa.Table, dim: int) -> Features:
    """TF-IDF of the titles (word unigrams and bigrams) reduced to `dim` dimensions by truncated SVD (LSA)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    titles = [t or "" for t in products["title"].to_pylist()]
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(titles)
    dim = min(dim, tfidf.shape[1] - 1)
    matrix = TruncatedSVD(dim, random_state=0).fit_transform(tfidf).astype(np.float32)
    return Features(f"TF-IDF titles (LSA {dim}-d)", products["product_id"].cast(pa.string()).to_pylist(), matrix)


def _aligned(features: list[Features], labels: dict[str, str], min_class_size: int):
    common = set(labels)
    for f in features:
        common &= set(f.product_ids)
    sizes = Counter(labels[pid] for pid in common)
    kept = sorted(pid for pid in common if sizes[labels[pid]] >= min_class_size)
    if not kept or len({labels[pid] for pid in kept}) < 2:
        raise EclipError(f"only {len(kept)} labelled products in categories of at least {min_class_size} products are "
                         f"embedded by every method; evaluate on a larger catalogue or lower --min-class-size")
    matrices = []
    for f in features:
        position = {pid: i for i, pid in enumerate(f.product_ids)}
        matrices.append(f.matrix[[position[pid] for pid in kept]])
    classes = sorted({labels[pid] for pid in kept})
    y = np.searchsorted(classes, [labels[pid] for pid in kept])
    return kept, matrices, y, classes


def _l2(x):
    from sklearn.preprocessing import normalize
    return normalize(x)


def classification_scores(x, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], c: float) -> tuple[float, float]:
    """(macro F1, micro F1) of a logistic regression, averaged over `splits` of (train rows, test rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    x = _l2(x)

    def predict(train, test):
        if len(np.unique(y[train])) < 2:
            return np.full(len(test), y[train][0])
        return LogisticRegression(C=c, max_iter=300).fit(x[train], y[train]).predict(x[test])

    predicted = side_by_side([lambda train=train, test=test: predict(train, test) for train, test in splits])
    macro = [f1_score(y[test], p, average="macro") for (_, test), p in zip(splits, predicted)]
    micro = [f1_score(y[test], p, average="micro") for (_, test), p in zip(splits, predicted)]
    return float(np.mean(macro)), float(np.mean(micro))


def clustering_nmi(x, y: np.ndarray, repeats: int, seed: int) -> float:
    """NMI between k-means clusters (k = number of classes) of the L2-normalized features and the classes."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = _l2(x)
    k = len(np.unique(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than clusters (e.g. the majority baseline's)
        return float(np.mean([normalized_mutual_info_score(y, KMeans(k, n_init=1, random_state=seed + r).fit_predict(x))
                              for r in range(repeats)]))


def stratified_splits(y: np.ndarray, fraction: float, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedShuffleSplit

    n_classes = len(np.unique(y))
    train_size = max(int(round(fraction * len(y))), n_classes)
    if len(y) - train_size < n_classes:
        raise EclipError(f"training fraction {fraction} leaves fewer test products than the {n_classes} categories; "
                         f"use smaller --train-fractions")
    return list(StratifiedShuffleSplit(repeats, train_size=train_size, random_state=seed).split(np.zeros(len(y)), y))


def evaluate(features: list[Features], labels: dict[str, str], config: GraphEvalConfig) -> dict:
    """Scores of every feature set on the products all of them embed; 'majority class' is the floor."""
    products, matrices, y, classes = _aligned(features, labels, config.min_class_size)
    splits = {f: stratified_splits(y, f, config.repeats, config.seed) for f in config.train_fractions}
    rows = []
    for f, x in zip(features, matrices):
        scores = {fraction: classification_scores(x, y, s, config.regularization) for fraction, s in splits.items()}
        rows.append({"method": f.name, "dim": int(x.shape[1]),
                     "macro_f1": {str(k): v[0] for k, v in scores.items()},
                     "micro_f1": {str(k): v[1] for k, v in scores.items()},
                     "nmi": clustering_nmi(x, y, config.repeats, config.seed)})
    rows.append(_majority_row(y, splits))
    return {"products": len(products), "classes": len(classes), "label_level": config.label_level,
            "train_fractions": list(config.train_fractions), "repeats": config.repeats, "methods": rows}


def _majority_row(y: np.ndarray, splits: dict) -> dict:
    from sklearn.metrics import f1_score

    macro, micro = {}, {}
    for fraction, pairs in splits.items():
        scored = []
        for train, test in pairs:
            predicted = np.full(len(test), np.bincount(y[train]).argmax())
            scored.append((f1_score(y[test], predicted, average="macro"), f1_score(y[test], predicted, average="micro")))
        macro[str(fraction)], micro[str(fraction)] = (float(v) for v in np.mean(scored, axis=0))
    return {"method": "majority class", "dim": 0, "macro_f1": macro, "micro_f1": micro, "nmi": 0.0}


def markdown_table(report: dict) -> str:
    fractions = [str(f) for f in report["train_fractions"]]
    header = (["method", "dim"] + [f"macro-F1 @{float(f):.0%}" for f in fractions]
              + [f"micro-F1 @{float(f):.0%}" for f in fractions] + ["NMI"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["methods"]:
        cells = ([row["method"], str(row["dim"])] + [f"{row['macro_f1'][f]:.3f}" for f in fractions]
                 + [f"{row['micro_f1'][f]:.3f}" for f in fractions] + [f"{row['nmi']:.3f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_features(run: Path) -> tuple[Features, tuple[str, ...]]:
    """The product embeddings of a `graph train` RUN_DIR and the meta-paths it walked."""
    summary_path = Path(run) / "train.json"
    if not summary_path.exists():
        raise EclipError(f"{run}: not a finished graph run (no train.json); run `eclip graph train --out {run}` first")
    options = json.loads(summary_path.read_text())["signature"]["config"]
    ids, matrix = product_vectors(Path(run) / EMBEDDINGS_FILE, "graph")
    return Features(f"{options['variant']} ({Path(run).name})", ids, matrix), tuple(options["metapaths"])


def onehot_features(graph: HeteroGraph, node_types: list[str]) -> Features:
    """Each product's own neighbours of `node_types` as a sparse 0/1 vector: what a walk can see at one hop."""
    n_products = len(graph.names["product"])
    blocks = []
    for node_type in node_types:
        relation = graph.relations[("product", node_type)]
        ones = np.ones(len(relation.indices), np.float32)
        blocks.append(sparse.csr_matrix((ones, relation.indices, relation.indptr), shape=(n_products, len(graph.names[node_type]))))
    return Features(f"one-hot {', '.join(node_types)}", graph.names["product"].tolist(), sparse.hstack(blocks).tocsr())


def concatenated(a: Features, b: Features) -> Features:
    """[a / |a|, b / |b|] on the products both embed."""
    position = {pid: i for i, pid in enumerate(b.product_ids)}
    both = [(i, position[pid]) for i, pid in enumerate(a.product_ids) if pid in position]
    if not both:
        raise EclipError(f"{a.name} and {b.name} embed no product in common (product_ids such as "
                         f"{next(iter(a.product_ids), None)!r} and {next(iter(b.product_ids), None)!r}); give --embeddings of the products the runs were trained on")
    rows_a, rows_b = (np.array(rows, dtype=np.int64) for rows in zip(*both))
    matrix = np.hstack([_l2(a.matrix[rows_a]), _l2(b.matrix[rows_b])])
    return Features(f"{a.name} + {b.name}", [a.product_ids[i] for i in rows_a], matrix)


ECLIP_COLUMNS = ("fused", "image", "text")


def evaluate_runs(data: Path, runs: list[Path], embeddings: Path | None, config: GraphEvalConfig,
                  brand_max_words: int = 4, brand_min_count: int = 2) -> dict:
    """One table: every run, the e-CLIP embeddings and each run concatenated with them, TF-IDF of the titles
    (when the products have titles), one-hot of the node types the runs walked, and the majority class; `notes`
    says what was left out."""
    products = load_products(data)
    labels = category_labels(products, config.label_level)
    features, walked = [], set()
    for run in runs:
        run_feature, metapaths = run_features(run)
        types = {t for path in metapaths for t in path.split("-")}
        leaking = sorted(t for t in types if t.startswith("category"))
        if leaking:
            raise EclipError(f"{run}: its walks went through {', '.join(leaking)} nodes, which give the category away; "
                             f"train the run you evaluate with --metapaths that avoid category nodes")
        features.append(run_feature)
        walked |= types - {"product"}
    if embeddings is not None:
        path = Path(embeddings) / EMBEDDINGS_FILE
        if not path.exists():
            raise EclipError(f"{path}: not found; --embeddings takes the EMB_DIR that holds embeddings.parquet")
        columns = [c for c in ECLIP_COLUMNS if c in embeddings_columns(path)]
        if not columns:
            raise EclipError(f"{path}: none of the columns {', '.join(ECLIP_COLUMNS)}; expected e-CLIP embeddings")
        eclip = [Features(f"e-CLIP {c}", *product_vectors(path, c)) for c in columns]
        features += eclip + [concatenated(run, eclip[0]) for run in features[:len(runs)]]
    notes = []
    if "title" in products.column_names:
        features.append(tfidf_features(products, features[0].matrix.shape[1] if features else 128))  # the runs' size
    else:
        notes.append("TF-IDF titles skipped: the products have no title column")
    if walked:
        graph = build_product_graph(products, brand_max_words, brand_min_count)
        features.append(onehot_features(graph, [t for t in graph.types if t in walked]))
    report = evaluate(features, labels, config)
    report["walked_node_types"] = sorted(walked)
    report["notes"] = notes
    return report
