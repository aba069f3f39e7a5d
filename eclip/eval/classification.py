"""Category and attribute classification (e-CLIP §3.4): zero-shot from the class names and a linear probe on
each view, the probe's C and the headline views chosen on val (`zeroshot.py`, `probe.py` hold the classifiers)."""

from __future__ import annotations

import numpy as np

from eclip.eval.config import EvalConfig
from eclip.eval.data import EvalData, SkipTask, TaskOutput, is_labelled
from eclip.eval.probe import classification_scores, select_probe
from eclip.eval.representation import Representation
from eclip.eval.zeroshot import prompt_classifier, zero_shot_predict

LEVEL_SEPARATOR = " > "
VIEW_PREFERENCE = ("fused", "text", "image")  # a view chosen on val: equal scores go to the earlier one


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
    return np.flatnonzero(is_labelled(val_labels))


def _classify(rep: Representation, config: EvalConfig, train_labels, val_labels, test_labels,
              views: list[str], zero_shot_names: dict[str, str] | None, prompt_fields: dict, templates: list[str],
              probe_metric: str) -> TaskOutput:
    """Zero-shot (when the representation encodes text) and probe on each of `views` for one labelling; each
    probe's C is the one of `probe_cs` with the best `probe_metric` (a classification_scores key) on val."""
    train_rows, test_rows = np.flatnonzero(is_labelled(train_labels)), np.flatnonzero(is_labelled(test_labels))
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
    classes = sorted(set(train_labels[is_labelled(train_labels)]) | set(truth))
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


def probe_views(rep: Representation, config: EvalConfig) -> list[str]:
    """The views a head is fit on: every view with probe_view "auto" (one is then chosen on val), else the one."""
    return rep.view_names() if config.probe_view == "auto" else [_headline_view(rep, config.probe_view)]


def probe_view(rep: Representation, config: EvalConfig, val_scores: dict) -> str:
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
    if not is_labelled(test_paths).any() or not is_labelled(train_paths).any():
        raise SkipTask("no category labels in the train or test split")
    val_paths = data.column("val", "category") if "val" in data.splits else None
    depth = max(len(p.split(LEVEL_SEPARATOR)) for p in np.concatenate([train_paths, test_paths]) if p)
    names = {p: p.split(LEVEL_SEPARATOR)[-1] for p in np.concatenate([train_paths, test_paths]) if p}
    if val_paths is not None:
        names.update({p: p.split(LEVEL_SEPARATOR)[-1] for p in val_paths if p})
    headline = {"zeroshot": _zero_shot_view(rep, config, train_paths, val_paths, names, {}, config.category_templates)}

    def classify(train_labels, val_labels, test_labels, views):
        level_names = {p: p.split(LEVEL_SEPARATOR)[-1] for p in set(train_labels) | set(test_labels) if p}
        return _classify(rep, config, train_labels, val_labels, test_labels, views, level_names, {},
                         config.category_templates, "weighted_f1")

    leaf = classify(train_paths, val_paths, test_paths,
                    rep.view_names() if rep.every_view else sorted({headline["zeroshot"], *probe_views(rep, config)}))
    headline["probe"] = probe_view(rep, config, {view: scores["val_score"]
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
    labelled = is_labelled(test_paths)
    scores.update(classes=len(set(train_paths[is_labelled(train_paths)]) | set(test_paths[labelled])),
                  test_products=int(labelled.sum()))
    probe = leaf.probes.get(headline["probe"])
    return TaskOutput(scores, {"confusion": leaf.curves.get(headline["probe"])},
                      {"category": (probe, headline["probe"]) if probe is not None else None})


def run_attributes(rep: Representation, data: EvalData, config: EvalConfig) -> TaskOutput:
    scores, probes = {}, {}
    for column in data.attributes:
        train_labels, test_labels = data.column("train", column), data.column("test", column)
        if len(set(train_labels[is_labelled(train_labels)])) < 2 or not is_labelled(test_labels).any():
            continue
        name = column.removeprefix("attr_")
        val_labels = data.column("val", column) if "val" in data.splits else None
        known = np.concatenate([train_labels, test_labels] + ([val_labels] if val_labels is not None else []))
        values = {v: v for v in set(known) if v}
        zs_view = _zero_shot_view(rep, config, train_labels, val_labels, values, {"name": name},
                                  config.attribute_templates)
        output = _classify(rep, config, train_labels, val_labels, test_labels,
                           sorted({zs_view, *probe_views(rep, config)}), values, {"name": name},
                           config.attribute_templates, "macro_f1")
        view = probe_view(rep, config, {v: s["val_score"] for v, s in output.scores["probe"].items()})
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
