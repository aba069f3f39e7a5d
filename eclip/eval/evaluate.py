"""`eclip eval`: the five e-CLIP downstream tasks (§3.4) plus cross-modal retrieval, for the trained model and
its baselines, on the same splits in one run. Light heads train on `train`, thresholds come from `val`, every
score is on `test`. The trained model's heads are saved for `eclip predict`. The tasks and their runners are
registered in `tasks.py`; this module embeds the splits they need, runs them and writes the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from eclip.config import to_dict, validate
from eclip.errors import EclipError
from eclip.eval import heads as task_heads
from eclip.eval.config import EvalConfig
from eclip.eval.data import SkipTask, load_eval_data
from eclip.eval.representation import tower_representation
from eclip.eval.tasks import TASKS
from eclip.files import check_out_folder
from eclip.index.embed import SPLITS
from eclip.progress import progress_bar
from eclip.runs.jsonl import read_jsonl
from eclip.runs.provenance import data_report, output_signature, weights_fingerprint

MODEL = "model"  # the evaluated run's name in curves and plot legends, beside the baselines' names


def unknown_token_share(processor, titles: list[str]) -> float:
    """Share of the titles' tokens that the model's tokenizer maps to [UNK]."""
    unknown = processor.tokenizer.token_to_id("[UNK]")
    ids = [i for row in processor.token_ids(titles) for i in row[1:-1]]  # without [CLS] and [SEP]
    return float(np.mean([i == unknown for i in ids])) if ids and unknown is not None else 0.0


def _model_summary(run_dir: Path, config) -> dict:
    saved = json.loads((Path(run_dir) / "config.json").read_text())
    metrics = read_jsonl(Path(run_dir) / "metrics.jsonl")
    last = metrics[-1] if metrics else {}
    selection = Path(run_dir) / "selection.json"  # which step's weights training kept (train.select)
    kept = json.loads(selection.read_text())["step"] if selection.is_file() else last.get("step")
    return {"run_dir": str(run_dir), "objective": saved.get("train", {}).get("objective"),
            "steps": last.get("step"), "kept_step": kept, "final_loss": last.get("loss"), "embed_dim": config.embed_dim,
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
    needed = sorted(set().union(*(TASKS[task].splits for task in config.tasks)))  # only these are embedded
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
                        output = TASKS[task].runner(rep, data, config)
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
