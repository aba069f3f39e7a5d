"""The evaluation report: report.json (every score), report.md (tables) and one PNG per task.

The headline table has one line per task: metric, the model's score, the best baseline's, the target from the
issue and pass/fail (pass = at or above the target, where there is one, and above every baseline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPORT_FILE = "report.json"
MARKDOWN_FILE = "report.md"
CONFUSION_PLOT = "category_confusion.png"
PR_PLOTS = {"matching": "matching_pr.png", "adult": "adult_pr.png"}
RECALL_PLOT = "retrieval_recall.png"
PLOT_FILES = (CONFUSION_PLOT, *PR_PLOTS.values(), RECALL_PLOT)
OWNED_FILES = (REPORT_FILE, MARKDOWN_FILE, *PLOT_FILES)  # all a REPORT_DIR may hold


@dataclass(frozen=True)
class Headline:
    task: str
    metric: str
    key: str  # dotted path into a report (or "attributes.*.<score>": the mean over attributes)
    target: float | None


HEADLINES = [
    Headline("retrieval text->image", "R@10", "retrieval.t2i.r10", 0.5),
    Headline("retrieval image->text", "R@10", "retrieval.i2t.r10", None),
    Headline("category zero-shot (leaf)", "weighted F1", "category.zeroshot.weighted_f1", 0.70),
    # The figure CLIP and FashionCLIP publish is the image view (images against prompts): shown beside the text
    # view whichever one val chose for the line above.
    Headline("category zero-shot (leaf), image view", "weighted F1", "category.zeroshot.by_view.image.weighted_f1",
             None),
    Headline("category zero-shot (leaf), text view", "weighted F1", "category.zeroshot.by_view.text.weighted_f1",
             None),
    Headline("category linear probe (leaf)", "top-1", "category.probe.top1", 0.85),
    Headline("attributes zero-shot", "mean macro F1", "attributes.*.zeroshot_macro_f1", None),
    Headline("attributes linear probe", "mean macro F1", "attributes.*.probe_macro_f1", None),
    Headline("product matching (pairs)", "F1 @ val threshold", "matching.f1", 0.95),
    Headline("product matching (kNN)", "mean F1", "matching.knn_f1", None),
    Headline("clustering vs catalog groups", "NMI", "clustering.nmi", None),
    Headline("clustering vs leaf categories", "NMI", "clustering.category.nmi", None),
    Headline("adult recognition", "ROC AUC", "adult.auc", 0.97),
]


def lookup(scores: dict, key: str) -> float | None:
    """A dotted key's value, or None; "a.*.b" averages b over the entries of a."""
    head, _, tail = key.partition(".*.")
    node = scores
    for part in head.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if not tail:
        return node if isinstance(node, (int, float)) else None
    values = [entry[tail] for entry in node.values() if isinstance(entry, dict) and tail in entry]
    return float(np.mean(values)) if values else None


def headline_rows(report: dict) -> list[dict]:
    rows = []
    for line in HEADLINES:
        ours = lookup(report, line.key)
        if ours is None:
            continue
        baselines = {name: lookup(scores, line.key) for name, scores in report.get("baselines", {}).items()}
        baselines = {name: value for name, value in baselines.items() if value is not None}
        best = max(baselines, key=baselines.get) if baselines else None
        meets_target = line.target is None or ours >= line.target
        beats_baselines = best is None or ours > baselines[best]
        rows.append({"task": line.task, "metric": line.metric, "key": line.key, "ours": ours,
                     "best_baseline": best, "baseline": baselines.get(best), "target": line.target,
                     "pass": meets_target and beats_baselines,
                     "why": ", ".join(([] if meets_target else [f"{ours - line.target:+.3f} vs target"]) +
                                      ([] if beats_baselines else [f"below {best}"]))})
    return rows


def _number(value) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the header, its separator, one line per row (each as many cells as the header)."""
    return ["| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows]]


def headline_table(report: dict) -> str:
    rows = []
    for row in headline_rows(report):
        baseline = f"{_number(row['baseline'])} ({row['best_baseline']})" if row["best_baseline"] else "-"
        verdict = "pass" if row["pass"] else f"FAIL ({row['why']})"
        rows.append([row["task"], row["metric"], _number(row["ours"]), baseline, _number(row["target"]), verdict])
    return "\n".join(markdown_table(["task", "metric", "ours", "best baseline", "target", "pass"], rows))


def _comparison(report: dict, title: str, keys: list[tuple[str, str]]) -> list[str]:
    """A table: one row per key, one column for the model and one per baseline that has any of the keys."""
    names = [n for n, s in report.get("baselines", {}).items() if any(lookup(s, k) is not None for _, k in keys)]
    rows = [[label, lookup(report, key), *[lookup(report["baselines"][n], key) for n in names]] for label, key in keys]
    rows = [[label, *map(_number, scores)] for label, *scores in rows if scores[0] is not None]
    if not rows:
        return []
    return [f"### {title}", "", *markdown_table(["score", "ours", *names], rows), ""]


def _head_choices(report: dict) -> list[str]:
    """"<head>: <view> vectors, C = <c>" for each fitted head of the model (the view and strength it kept)."""
    choices = []
    category = report.get("category", {}).get("probe", {})
    if "view" in category and "c" in category:
        choices.append(("category", category["view"], category["c"]))
    for name, entry in report.get("attributes", {}).items():
        if "probe_view" in entry:
            choices.append((name, entry["probe_view"], entry["probe_c"]))
    if "probe_view" in report.get("adult", {}):
        choices.append(("adult", report["adult"]["probe_view"], report["adult"]["probe_c"]))
    return [f"{head}: {view} vectors, C = {c:g}" for head, view, c in choices]


def markdown(report: dict) -> str:
    model, splits = report["model"], report["splits"]
    lines = ["# eclip evaluation", "",
             f"Model `{model['run_dir']}` ({model['objective']} objective, {model['steps']} steps, the weights of "
             f"step {model.get('kept_step', model['steps'])}, "
             f"{model['embed_dim']}-d, text tower {model['text_model']}, images at {model['image_size']} px) "
             f"on `{report['data']['data_dir']}`: train {splits['train']}, val {splits['val']}, test {splits['test']} "
             f"products. Heads train on train ({report['products_used']['train']} products embedded: whole catalog "
             f"groups, capped), thresholds come from val, every score is on test.", "",
             "## Headline", "", headline_table(report), ""]
    zero_shot_view = report.get("category", {}).get("zeroshot", {}).get("view")
    if zero_shot_view:
        how = "chosen on val" if report["config"].get("zeroshot_view") == "auto" else "configured"
        lines += [f"Category zero-shot classifies the {zero_shot_view} vectors ({how}). Published zero-shot "
                  f"figures (CLIP, FashionCLIP) classify images against the prompts: compare them with the image "
                  f"view's line only.", ""]
    heads = _head_choices(report)
    if heads:
        how = "chosen on val" if report["config"].get("probe_view") == "auto" else "view configured, C chosen on val"
        lines += [f"The linear-probe heads read ({how}): " + "; ".join(heads) + ".", ""]
    lines += ["## Details", ""]
    lines += _comparison(report, "Retrieval (positives: every image/title of the catalog group)",
                         [(f"{d} R@{k}", f"retrieval.{d}.r{k}") for d in ("t2i", "i2t") for k in report["config"]["recall_ks"]])
    category_keys = [(f"leaf {kind} {m}", f"category.{kind}.{m}") for kind in ("zeroshot", "probe")
                     for m in ("top1", "weighted_f1")]
    category_keys += [(f"leaf {kind} {view} top1", f"category.{kind}.by_view.{view}.top1")
                      for kind in ("zeroshot", "probe") for view in ("image", "text", "fused")]
    for level in sorted(report.get("category", {}).get("levels", {}), key=int):
        category_keys += [(f"level {level} {kind} top1", f"category.levels.{level}.{kind}.top1")
                          for kind in ("zeroshot", "probe")]
    lines += _comparison(report, "Category classification", category_keys)
    attribute_keys = [(f"{name} {kind}", f"attributes.{name}.{kind}_macro_f1")
                      for name in report.get("attributes", {}) for kind in ("zeroshot", "probe")]
    lines += _comparison(report, "Attribute extraction (macro F1)", attribute_keys)
    lines += _comparison(report, "Product matching (the similarity expanded over each product's k nearest, as "
                                 "chosen on val; unexpanded: k = 0)",
                         [(k, f"matching.{k}") for k in
                          ("ap", "f1", "threshold", "best_test_f1", "knn_f1", "knn_threshold", "expansion_neighbours",
                           "expansion_alpha", "image_weight", "unexpanded.ap", "unexpanded.f1", "unexpanded.knn_f1")])
    lines += _comparison(report, "Clustering (average linkage, cut at the true number of clusters)",
                         [("groups NMI", "clustering.nmi"), ("groups ARI", "clustering.ari"),
                          ("categories NMI", "clustering.category.nmi"), ("categories ARI", "clustering.category.ari")])
    lines += _comparison(report, "Adult / restricted products", [("ROC AUC", "adult.auc"), ("AP", "adult.ap"),
                                                                ("precision @ recall 0.9", "adult.precision_at_recall_90")])
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items())
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines += ["## Run", "", f"Seconds: {seconds}.", "", f"Versions: {versions}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots
def _figure(width: float = 6.0, height: float = 4.5):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(width, height))
    return plt, figure, axis


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_confusion(truth: np.ndarray, predicted: np.ndarray, top: int, path: Path) -> None:
    """Rows: the `top` most frequent true leaf categories, normalized to 1; other predictions are not shown."""
    classes, counts = np.unique(truth, return_counts=True)
    shown = list(classes[np.argsort(-counts, kind="stable")[:top]])
    position = {c: i for i, c in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)))
    for t, p in zip(truth, predicted):
        if t in position and p in position:
            matrix[position[t], position[p]] += 1
    matrix /= np.maximum(np.array([counts[list(classes).index(c)] for c in shown])[:, None], 1)
    names = [c.split(" > ")[-1] for c in shown]
    plt, figure, axis = _figure(8, 7)
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"leaf category, linear probe: the {len(shown)} most frequent test classes")
    figure.colorbar(image, ax=axis, fraction=0.046)
    _save(plt, figure, path)


def plot_pr(curves: dict[str, dict], title: str, path: Path) -> None:
    plt, figure, axis = _figure()
    for name, curve in curves.items():
        step = max(1, len(curve["recall"]) // 2000)  # a readable file, not millions of points
        axis.plot(curve["recall"][::step], curve["precision"][::step], label=name)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    _save(plt, figure, path)


def plot_recall(curves: dict[str, dict], path: Path) -> None:
    plt, figure, axis = _figure()
    for name, by_direction in curves.items():
        for direction, style in (("t2i", "-"), ("i2t", "--")):
            curve = by_direction[direction]
            axis.plot(np.arange(1, len(curve) + 1), curve, style, label=f"{name} {direction}")
    axis.set_xlabel("K")
    axis.set_ylabel("recall@K")
    axis.set_ylim(0, 1.02)
    axis.set_title("cross-modal retrieval on test (t2i solid, i2t dashed)")
    axis.grid(alpha=0.3)
    axis.legend()
    _save(plt, figure, path)


def write_report(out: Path, report: dict, curves: dict[str, dict], confusion_classes: int = 20) -> None:
    """report.json, report.md and the plots; `curves[method][task]` holds what each plot needs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    ours = curves["model"]
    if ours.get("category", {}).get("confusion"):
        plot_confusion(*ours["category"]["confusion"], confusion_classes, out / CONFUSION_PLOT)
        written.add(CONFUSION_PLOT)
    for task, title in (("matching", "product matching: all test pairs"), ("adult", "adult / restricted products")):
        pr = {name: by_task[task]["pr"] for name, by_task in curves.items() if by_task.get(task, {}).get("pr")}
        if pr:
            plot_pr(pr, title, out / PR_PLOTS[task])
            written.add(PR_PLOTS[task])
    recall = {name: by_task["retrieval"] for name, by_task in curves.items() if by_task.get("retrieval")}
    if recall:
        plot_recall(recall, out / RECALL_PLOT)
        written.add(RECALL_PLOT)
    for stale in set(PLOT_FILES) - written:  # an earlier run's plot of a task this report does not hold
        (out / stale).unlink(missing_ok=True)
    (out / MARKDOWN_FILE).write_text(markdown(report))
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1, default=float))  # last: its presence means done
