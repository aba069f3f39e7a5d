"""`eclip eval`: the five e-CLIP downstream tasks (§3.4) plus cross-modal retrieval, for the trained model and
its baselines, on the same splits in one run. Light heads train on `train`, thresholds come from `val`, every
score is on `test`. The trained model's heads are saved for `eclip predict`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import roc_auc_score

from eclip.data.store import read_products
from eclip.runs.provenance import data_report, output_signature, weights_fingerprint
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.progress import progress_bar
from eclip.eval import heads as task_heads
from eclip.eval.adult import adult_scores, precision_at_recall
from eclip.eval.clustering import clustering_scores
from eclip.config import to_dict, validate
from eclip.eval.config import EvalConfig
from eclip.eval.representation import Representation, tower_representation
from eclip.index.embed import SPLITS
from eclip.eval.matching import IMAGE_WEIGHTS, expand_similarity, matching_scores, setup_on_val
from eclip.eval.probe import classification_scores, select_probe
from eclip.eval.retrieval import retrieval_scores
from eclip.eval.zeroshot import prompt_classifier, zero_shot_predict

METADATA_COLUMNS = ["product_id", "title", "title_norm", "category", "group_id", "adult", "image_hash", "split"]
LEVEL_SEPARATOR = " > "
MODEL = "model"  # the evaluated run's name in curves and plot legends, beside the baselines' names
VIEW_PREFERENCE = ("fused", "text", "image")  # a view chosen on val: equal scores go to the earlier one


class SkipTask(Exception):
    """The data has no labels for this task: it is skipped with this note, the others run."""


@dataclass
class EvalData:
    """Labels, metadata and thumbnails of the products each split contributes (train capped at
    `probe_max_train`), plus the products matching and clustering use."""
    splits: dict[str, pa.Table]
    attributes: list[str]
    sizes: dict[str, int]  # products per split in DATA_DIR, before any cap
    pair_rows: dict[str, np.ndarray] = field(default_factory=dict)  # split -> rows: whole groups, capped

    def column(self, split: str, name: str) -> np.ndarray:
        return np.asarray(self.splits[split].column(name).to_pylist(), dtype=object)

    def thumbnails(self, split: str) -> pa.Array:
        return self.splits[split].column("thumbnail").combine_chunks()


@dataclass
class TaskOutput:
    scores: dict
    curves: dict = field(default_factory=dict)  # for the plots
    probes: dict = field(default_factory=dict)  # fitted heads, kept for the trained model only


def _whole_groups(groups: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of randomly ordered whole groups, as many groups as fit in `cap` rows (offers stay together)."""
    unique, counts = np.unique(groups, return_counts=True)
    order = rng.permutation(len(unique))
    kept = unique[order][np.cumsum(counts[order]) <= cap]
    return np.flatnonzero(np.isin(groups, kept))


def load_eval_data(data_dir: Path, config: EvalConfig) -> EvalData:
    report = data_report(data_dir)
    table = read_products(data_dir)
    attributes = [name for name in table.column_names if name.startswith("attr_")]
    table = table.select(METADATA_COLUMNS + attributes + ["thumbnail"])
    splits = {split: table.filter(pc.equal(table.column("split"), split)) for split in SPLITS}
    if splits["test"].num_rows == 0:
        raise EclipError(f"{data_dir}: the test split is empty ({table.num_rows} products, "
                         f"{report.get('splits', {})}): prepare more products or a larger --test-fraction")
    if splits["train"].num_rows == 0:
        raise EclipError(f"{data_dir}: the train split is empty: the task heads have nothing to learn from")
    data = EvalData(splits, attributes, {split: t.num_rows for split, t in splits.items()})
    rng = np.random.default_rng(config.seed)
    # Heads learn from at most probe_max_train products: embedding the rest of a large train split buys little.
    if splits["train"].num_rows > config.probe_max_train:
        keep = _whole_groups(data.column("train", "group_id"), config.probe_max_train, rng)
        data.splits["train"] = splits["train"].take(pa.array(keep))
    for split in ("val", "test"):
        data.pair_rows[split] = _whole_groups(data.column(split, "group_id"), config.pair_max_products, rng)
    return data


def unknown_token_share(processor, titles: list[str]) -> float:
    """Share of the titles' tokens that the model's tokenizer maps to [UNK]."""
    unknown = processor.tokenizer.token_to_id("[UNK]")
    ids = [i for row in processor.token_ids(titles) for i in row[1:-1]]  # without [CLS] and [SEP]
    return float(np.mean([i == unknown for i in ids])) if ids and unknown is not None else 0.0


# ---------------------------------------------------------------- tasks
def _labelled(values: np.ndarray) -> np.ndarray:
    return np.array([v is not None and v != "" for v in values], dtype=bool)


def _level(path: str | None, level: int | None) -> str | None:
    """A category path cut at `level` (1 = top), None when it is shorter; level None is the leaf (full path)."""
    if path is None:
        return None
    parts = path.split(LEVEL_SEPARATOR)
    if level is None:
        return path
    return LEVEL_SEPARATOR.join(parts[:level]) if len(parts) >= level else None


def _val_rows(rep: Representation, val_labels) -> np.ndarray:
    """Labelled val rows, none when the labels or the representation's val vectors are missing."""
    if val_labels is None or "val" not in rep.views:
        return np.array([], dtype=int)
    return np.flatnonzero(_labelled(val_labels))


def _classify(rep: Representation, data: EvalData, config: EvalConfig, train_labels, val_labels, test_labels,
              views: list[str], zero_shot_names: list[str] | None, prompt_fields: dict, templates: list[str],
              probe_metric: str) -> TaskOutput:
    """Zero-shot (when the representation encodes text) and probe on each of `views` for one labelling; each
    probe's C is the one of `probe_cs` with the best `probe_metric` (a classification_scores key) on val."""
    train_rows, test_rows = np.flatnonzero(_labelled(train_labels)), np.flatnonzero(_labelled(test_labels))
    val_rows = _val_rows(rep, val_labels)
    truth = test_labels[test_rows].astype(str)
    output = TaskOutput({})
    if zero_shot_names is not None and rep.encode_text is not None:
        classes = sorted(set(train_labels[train_rows]) | set(truth))
        shown = [zero_shot_names[c] for c in classes]
        classifier = prompt_classifier(rep.encode_text, shown, templates, **prompt_fields)
        output.scores["zeroshot"] = {
            view: classification_scores(truth, zero_shot_predict(rep.views["test"][view][test_rows], classifier,
                                                                 classes)) for view in views}
    if len(set(train_labels[train_rows])) >= 2:
        output.scores["probe"] = {}
        def val_score(truth, probe, features):
            return classification_scores(truth, probe.predict(features))[probe_metric]

        for view in views:
            probe, on_val = select_probe(rep.views["train"][view][train_rows], train_labels[train_rows].astype(str),
                                         rep.views["val"][view][val_rows] if len(val_rows) else None,
                                         val_labels[val_rows].astype(str) if len(val_rows) else None,
                                         config.probe_cs, config.probe_max_iter, val_score)
            predicted = probe.predict(rep.views["test"][view][test_rows])
            output.scores["probe"][view] = {**classification_scores(truth, predicted), "c": float(probe.C),
                                            "val_score": on_val}
            output.probes[view] = probe
            output.curves[view] = (truth, predicted)
    return output


def _zero_shot_view(rep: Representation, config: EvalConfig, train_labels, val_labels, names: dict,
                    prompt_fields: dict, templates: list[str]) -> str:
    """The view zero-shot reports in the headline: the configured one, or with "auto" the view whose zero-shot
    weighted F1 on `val` is highest (ties: fused, text, image), so the choice never looks at `test`."""
    if config.zeroshot_view != "auto":
        return _headline_view(rep, config.zeroshot_view)
    views = [view for view in VIEW_PREFERENCE if view in rep.view_names()]
    rows = _val_rows(rep, val_labels)
    if rep.encode_text is None or len(rows) == 0 or len(views) == 1:
        return _headline_view(rep, "fused")
    truth = val_labels[rows].astype(str)
    classes = sorted(set(train_labels[_labelled(train_labels)]) | set(truth))
    classifier = prompt_classifier(rep.encode_text, [names[c] for c in classes], templates, **prompt_fields)
    return _best_on_val(rep, {view: classification_scores(truth, zero_shot_predict(rep.views["val"][view][rows],
                                                                                  classifier, classes))["weighted_f1"]
                              for view in views})


def _headline_view(rep: Representation, preferred: str) -> str:
    return preferred if preferred in rep.view_names() else rep.primary


def _best_on_val(rep: Representation, val_scores: dict) -> str:
    """The view with the highest val score (`val_scores`: view -> score or None); none scored: fused."""
    scored = [view for view in VIEW_PREFERENCE if val_scores.get(view) is not None]
    return max(scored, key=lambda view: val_scores[view]) if scored else _headline_view(rep, "fused")


def _probe_views(rep: Representation, config: EvalConfig) -> list[str]:
    """The views a head is fit on: every view with probe_view "auto" (one is then chosen on val), else the one."""
    return rep.view_names() if config.probe_view == "auto" else [_headline_view(rep, config.probe_view)]


def _probe_view(rep: Representation, config: EvalConfig, val_scores: dict) -> str:
    """The view a head reads: the configured one, or with "auto" the view whose probe scored best on val
    (`val_scores`: view -> score or None; ties: fused, text, image; no val score at all: fused)."""
    if config.probe_view != "auto":
        return _headline_view(rep, config.probe_view)
    return _best_on_val(rep, val_scores)


SUMMARY_KEYS = ("top1", "weighted_f1", "macro_f1", "c")


def _summarize(by_view: dict, view: str, keep_views: bool = True) -> dict:
    """{top1, weighted_f1, macro_f1, view} (and the probe's c) of the headline view, plus every view's scores
    under by_view."""
    summary = {**{k: by_view[view][k] for k in SUMMARY_KEYS if k in by_view[view]}, "view": view}
    return {**summary, "by_view": by_view} if keep_views else summary


def run_category(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    """Zero-shot and probe at the leaf (the full path) on every view, and at every level on the headline views."""
    train_paths, test_paths = data.column("train", "category"), data.column("test", "category")
    if not _labelled(test_paths).any() or not _labelled(train_paths).any():
        raise SkipTask("no category labels in the train or test split")
    val_paths = data.column("val", "category") if "val" in data.splits else None
    depth = max(len(p.split(LEVEL_SEPARATOR)) for p in np.concatenate([train_paths, test_paths]) if p)
    names = {p: p.split(LEVEL_SEPARATOR)[-1] for p in np.concatenate([train_paths, test_paths]) if p}
    if val_paths is not None:
        names.update({p: p.split(LEVEL_SEPARATOR)[-1] for p in val_paths if p})
    headline = {"zeroshot": _zero_shot_view(rep, config, train_paths, val_paths, names, {}, config.category_templates)}

    def classify(train_labels, val_labels, test_labels, views):
        level_names = {p: p.split(LEVEL_SEPARATOR)[-1] for p in set(train_labels) | set(test_labels) if p}
        return _classify(rep, data, config, train_labels, val_labels, test_labels, views, level_names, {},
                         config.category_templates, "weighted_f1")

    leaf = classify(train_paths, val_paths, test_paths,
                    rep.view_names() if rep.every_view else sorted({headline["zeroshot"], *_probe_views(rep, config)}))
    headline["probe"] = _probe_view(rep, config, {view: scores["val_score"]
                                                  for view, scores in leaf.scores.get("probe", {}).items()})
    scores = {kind: _summarize(by_view, headline[kind]) for kind, by_view in leaf.scores.items()}
    scores["levels"] = {}
    for level in range(1, depth + 1):
        train_labels = np.array([_level(p, level) for p in train_paths], dtype=object)
        test_labels = np.array([_level(p, level) for p in test_paths], dtype=object)
        val_labels = np.array([_level(p, level) for p in val_paths], dtype=object) if val_paths is not None else None
        same_as_leaf = list(train_labels) == list(train_paths) and list(test_labels) == list(test_paths)
        output = leaf if same_as_leaf else classify(train_labels, val_labels, test_labels,
                                                    sorted(set(headline.values())))
        scores["levels"][str(level)] = {kind: _summarize(by_view, headline[kind], keep_views=False)
                                        for kind, by_view in output.scores.items()}
    labelled = _labelled(test_paths)
    scores.update(classes=len(set(train_paths[_labelled(train_paths)]) | set(test_paths[labelled])),
                  test_products=int(labelled.sum()))
    probe = leaf.probes.get(headline["probe"])
    return TaskOutput(scores, {"confusion": leaf.curves.get(headline["probe"])},
                      {"category": (probe, headline["probe"]) if probe is not None else None})


def run_attributes(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    scores, probes = {}, {}
    for column in data.attributes:
        train_labels, test_labels = data.column("train", column), data.column("test", column)
        if len(set(train_labels[_labelled(train_labels)])) < 2 or not _labelled(test_labels).any():
            continue
        name = column.removeprefix("attr_")
        val_labels = data.column("val", column) if "val" in data.splits else None
        known = np.concatenate([train_labels, test_labels] + ([val_labels] if val_labels is not None else []))
        values = {v: v for v in set(known) if v}
        zs_view = _zero_shot_view(rep, config, train_labels, val_labels, values, {"name": name},
                                  config.attribute_templates)
        output = _classify(rep, data, config, train_labels, val_labels, test_labels,
                           sorted({zs_view, *_probe_views(rep, config)}), values, {"name": name},
                           config.attribute_templates, "macro_f1")
        view = _probe_view(rep, config, {v: s["val_score"] for v, s in output.scores["probe"].items()})
        entry = {"probe_macro_f1": output.scores["probe"][view]["macro_f1"],
                 "probe_top1": output.scores["probe"][view]["top1"],
                 "probe_c": output.scores["probe"][view]["c"], "probe_view": view,
                 "classes": output.scores["probe"][view]["classes"],
                 "test_products": output.scores["probe"][view]["test_products"]}
        if "zeroshot" in output.scores:
            entry.update(zeroshot_macro_f1=output.scores["zeroshot"][zs_view]["macro_f1"],
                         zeroshot_top1=output.scores["zeroshot"][zs_view]["top1"], zeroshot_view=zs_view)
        scores[name] = entry
        probes[name] = (output.probes[view], view)
    if not scores:
        raise SkipTask("no attr_* column has two or more values in train and a value in test")
    return TaskOutput(scores, probes={"attributes": probes})


def _pair_similarity(rep: Representation, data: EvalData, split: str, view: str | None = None) -> np.ndarray:
    vectors = rep.views[split][view or rep.primary][data.pair_rows[split]]
    return rep.similarity(vectors, vectors)


def _has_pairs(groups: np.ndarray) -> bool:
    return len(groups) > len(set(groups))


def run_matching(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    groups = {split: data.column(split, "group_id")[data.pair_rows[split]] for split in ("val", "test")}
    for split in ("val", "test"):
        if not _has_pairs(groups[split]):
            raise SkipTask(f"no catalog group has two products in {split}: matching needs multi-seller offers "
                           f"(a catalog_id column, or `eclip offers`)")
    primary = {split: _pair_similarity(rep, data, split) for split in ("val", "test")}
    two_views = {"image", "text"} <= set(rep.view_names())
    if two_views:  # the two towers' cosines, weighted on val
        image = {split: _pair_similarity(rep, data, split, "image") for split in ("val", "test")}
        text = {split: _pair_similarity(rep, data, split, "text") for split in ("val", "test")}
        weights = list(IMAGE_WEIGHTS)

        def similarity_of(split, weight):
            return weight * image[split] + (1 - weight) * text[split]
    else:
        weights = [None]

        def similarity_of(split, weight):
            return primary[split]

    def scored(weight, expansion):
        similarity = {split: expand_similarity(similarity_of(split, weight), *expansion) for split in ("val", "test")}
        return matching_scores(similarity["val"], groups["val"], similarity["test"], groups["test"],
                               config.matching_neighbours)

    (weight, expansion), unexpanded = setup_on_val(lambda w: similarity_of("val", w), weights,
                                                   config.matching_expansions(), groups["val"])
    scores, curve = scored(weight, expansion)
    plain = scores if unexpanded == (weight, expansion) else scored(*unexpanded)[0]
    scores.update(expansion_neighbours=expansion[0], expansion_alpha=expansion[1],
                  unexpanded={key: plain[key] for key in ("ap", "f1", "knn_f1")})
    if two_views:
        fused_vector = matching_scores(primary["val"], groups["val"], primary["test"], groups["test"],
                                       config.matching_neighbours)[0]
        scores.update(image_weight=weight, unexpanded_image_weight=unexpanded[0],
                      fused_vector_f1=fused_vector["f1"], fused_vector_ap=fused_vector["ap"])
    scores["products"] = len(groups["test"])
    return TaskOutput(scores, {"pr": curve})


def run_clustering(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    rows = data.pair_rows["test"]
    similarity = _pair_similarity(rep, data, "test")
    groups = data.column("test", "group_id")[rows]
    categories = data.column("test", "category")[rows]
    scores = {}
    if _has_pairs(groups):
        scores.update(clustering_scores(similarity, groups), clusters=len(set(groups)), products=len(groups))
    labelled = np.flatnonzero(_labelled(categories))
    if len(set(categories[labelled])) >= 2:
        scores["category"] = {**clustering_scores(similarity[np.ix_(labelled, labelled)], categories[labelled].astype(str)),
                              "clusters": len(set(categories[labelled])), "products": len(labelled)}
    if not scores:
        raise SkipTask("the test products have neither shared catalog groups nor two categories")
    return TaskOutput(scores)


def run_adult(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    labels = {split: data.column(split, "adult") for split in SPLITS}
    known = {split: np.flatnonzero([v is not None for v in labels[split]]) for split in SPLITS}
    train_y = labels["train"][known["train"]].astype(bool)
    test_y = labels["test"][known["test"]].astype(bool)
    if len(set(train_y)) < 2 or len(set(test_y)) < 2:
        raise SkipTask("the adult column is empty or one-valued in train or test")
    val_y = labels["val"][known["val"]].astype(bool)
    two_valued = len(set(val_y)) == 2 and "val" in rep.views  # AUC, which chooses C and the view, needs both values

    def val_auc(truth, probe, features):
        return roc_auc_score(truth, probe.predict_proba(features)[:, 1])

    fitted = {view: select_probe(rep.views["train"][view][known["train"]], train_y,
                                 rep.views["val"][view][known["val"]] if two_valued else None,
                                 val_y if two_valued else None, config.probe_cs, config.probe_max_iter, val_auc)
              for view in _probe_views(rep, config)}
    view = _probe_view(rep, config, {v: on_val for v, (_, on_val) in fitted.items()})
    probe = fitted[view][0]
    scores, curve = adult_scores(probe.predict_proba(rep.views["test"][view][known["test"]])[:, 1], test_y)
    scores.update(probe_c=float(probe.C), probe_view=view)
    threshold = 0.5
    if val_y.any() and "val" in rep.views:  # the decision threshold `eclip predict` applies: 90% recall on val
        val_scores = probe.predict_proba(rep.views["val"][view][known["val"]])[:, 1]
        threshold = precision_at_recall(val_scores, val_y, 0.9)[1]
    return TaskOutput(scores, {"pr": curve}, {"adult": (probe, view), "adult_threshold": threshold})


def run_retrieval(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    views = rep.views["test"]
    scores, curves = retrieval_scores(views["image"], views["text"], data.column("test", "group_id"),
                                      config.recall_ks, config.curve_max_k)
    return TaskOutput(scores, curves)


# val is embedded for the tasks that choose something on it: thresholds, the zero-shot view.
TASK_SPLITS = {"retrieval": {"test"}, "category": {"train", "val", "test"}, "attributes": {"train", "val", "test"},
               "matching": {"val", "test"}, "clustering": {"test"}, "adult": {"train", "val", "test"}}
TASK_RUNNERS = {"retrieval": run_retrieval, "category": run_category, "attributes": run_attributes,
                "matching": run_matching, "clustering": run_clustering, "adult": run_adult}


# ---------------------------------------------------------------- the run
def _model_summary(run_dir: Path, config) -> dict:
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    metrics = Path(run_dir) / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    return {"run_dir": str(run_dir), "objective": saved.get("train", {}).get("objective"),
            "steps": last.get("step"), "final_loss": last.get("loss"), "embed_dim": config.embed_dim,
            "image_size": config.vision.image_size, "text_model": config.text.model}


def _versions() -> dict:
    import importlib.metadata as metadata
    import platform

    names = ["eclip", "torch", "transformers", "tokenizers", "numpy", "scikit-learn", "faiss-cpu", "pyarrow",
             "duckdb", "matplotlib"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def evaluate(run_dir: Path, data_dir: Path, out: Path, config: EvalConfig, force: bool = False) -> dict:
    """Score the model of RUN_DIR and the baselines on DATA_DIR -> the report (also written to OUT)."""
    from eclip.models import load_model
    from eclip.eval.baselines import hash_representation, tfidf_representation, untrained_representation
    from eclip.eval.report import OWNED_FILES, REPORT_FILE, write_report

    run_dir, data_dir, out = Path(run_dir), Path(data_dir), Path(out)
    validate(config)
    check_out_folder(out, OWNED_FILES, "eval")
    signature = output_signature(run_dir, data_dir, to_dict(config))
    heads_dir = run_dir / task_heads.HEADS_DIR
    if (out / REPORT_FILE).is_file() and not force:
        previous = json.loads((out / REPORT_FILE).read_text())
        # Reused only while RUN_DIR/heads holds the heads it saved: after a later eval of the same tasks replaced
        # them, running again restores them.
        if previous.get("signature") == signature and "heads" in previous and \
                task_heads.holds_heads_of(heads_dir, out, previous["heads"]):
            return {**previous, "reused": True}
    started = time.perf_counter()
    model, processor, model_config = load_model(run_dir)
    weights = weights_fingerprint(run_dir)
    data = load_eval_data(data_dir, config)
    notes = []
    share = unknown_token_share(processor, data.column("test", "title")[:2000].tolist())
    if share > config.max_unknown_token_share:
        raise EclipError(f"{run_dir}'s tokenizer does not fit {data_dir}'s titles: {share:.0%} of their tokens are "
                         f"[UNK] (limit {config.max_unknown_token_share:.0%}); evaluate a model trained on this "
                         f"kind of catalogue")
    if share > 0.05:
        notes.append(f"{share:.0%} of the test titles' tokens are unknown to the model's tokenizer")

    seconds = {}
    tick = time.perf_counter()
    needed = sorted(set().union(*(TASK_SPLITS[task] for task in config.tasks)))  # only these are embedded
    thumbnails = {split: data.thumbnails(split) for split in needed}
    titles = {split: data.splits[split].column("title").to_pylist() for split in needed}
    representations = [tower_representation(MODEL, model, titles, thumbnails, config.batch_size, every_view=True)]
    seconds["embed"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    for name in config.baselines:
        if name == "tfidf":
            representations.append(tfidf_representation(data.splits, config.tfidf_max_features))
        elif name == "image_hash":
            representations.append(hash_representation(data.splits))
        else:
            representations.append(untrained_representation(model_config, data.splits["train"], titles, thumbnails,
                                                             config.batch_size, config.seed))
    seconds["baseline_features"] = round(time.perf_counter() - tick, 2)

    results = {rep.name: {} for rep in representations}
    curves = {rep.name: {} for rep in representations}
    skipped, probes = {}, {}
    with progress_bar("tasks", len(config.tasks), "task") as advance:
        for task in config.tasks:
            tick = time.perf_counter()
            try:
                for rep in representations:
                    if task in rep.tasks:
                        output = TASK_RUNNERS[task](rep, data, config)
                        results[rep.name][task] = output.scores
                        curves[rep.name][task] = output.curves
                        if rep is representations[0]:
                            probes.update(output.probes)
            except SkipTask as reason:
                skipped[task] = str(reason)
                notes.append(f"{task} skipped: {reason}")
            seconds[task] = round(time.perf_counter() - tick, 2)
            advance(task=task)

    ours = results.pop(MODEL)
    saved_heads = task_heads.save_heads(heads_dir, probes, {"data": str(data_dir.resolve()),
                                                            "report": str(out.resolve()), "weights": weights}) \
        if probes else []
    report = {
        **ours,
        "baselines": results,
        "skipped": skipped,
        "notes": notes,
        "model": _model_summary(run_dir, model_config),
        "data": {"data_dir": str(data_dir), "catalog": data_report(data_dir).get("catalog"),
                 "attributes": [a.removeprefix("attr_") for a in data.attributes]},
        "splits": data.sizes,
        "products_used": {split: len(titles[split]) if split in titles else 0 for split in SPLITS},
        "pair_products": {split: len(rows) for split, rows in data.pair_rows.items()},
        "unknown_token_share": share,
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
        "versions": _versions(),
        "config": to_dict(config),
        "signature": signature,
        "heads": saved_heads,  # their names in RUN_DIR/heads
    }
    write_report(out, report, curves, config.confusion_classes)
    return {**report, "reused": False}
