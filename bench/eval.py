"""Objective comparison: the `eclip` objective against `clip` on the same data, config and step count, scored by
`eclip eval` (run by hand; results in bench/results/eval.json and eval.md).

Runs trained with the same config differ only in their objective. Several RUN_DIRs for one name (comma-separated:
the same config with other seeds) are scored each and compared by their mean, each run's score shown beside it,
since a single seed's margin can be noise. When a run is still going (or was stopped), `--step N` exports
checkpoint N of each into a RUN_DIR of its own, so that all are compared at the same step:

    python bench/eval.py --data runs/apps/data --runs eclip=runs/apps/tiny-eclip clip=runs/apps/tiny-clip \\
        --step 150 --work runs/apps/compare
    python bench/eval.py --data runs/demo/data --runs eclip=runs/demo/model,runs/exp/seed1 \\
        clip=runs/apps/tiny-clip,runs/exp/seed1-clip --tasks retrieval,matching,clustering,category,adult
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eclip.eval.config import load_eval_config  # noqa: E402
from eclip.eval.evaluate import evaluate  # noqa: E402
from eclip.eval.report import lookup  # noqa: E402

# The scores the issue says the objective must win (matching and clustering), plus the others for context.
COMPARED = [
    ("matching AP", "matching.ap"), ("matching F1", "matching.f1"), ("matching kNN F1", "matching.knn_f1"),
    ("clustering NMI (groups)", "clustering.nmi"), ("clustering ARI (groups)", "clustering.ari"),
    ("clustering NMI (categories)", "clustering.category.nmi"),
    ("retrieval t2i R@10", "retrieval.t2i.r10"), ("retrieval i2t R@10", "retrieval.i2t.r10"),
    ("category zero-shot weighted F1", "category.zeroshot.weighted_f1"), ("category probe top-1", "category.probe.top1"),
    ("adult AUC", "adult.auc"),
]
MUST_WIN = {"matching.ap", "matching.f1", "matching.knn_f1", "clustering.nmi", "clustering.ari"}


def export_checkpoint(run_dir: Path, step: int, out: Path) -> Path:
    """RUN_DIR's checkpoint at `step` -> a RUN_DIR of its own (weights, config, tokenizer, metrics up to `step`)."""
    import torch
    from safetensors.torch import save_file

    checkpoint = run_dir / "checkpoints" / f"step-{step:07d}.pt"
    if (out / "model.safetensors").is_file():
        return out
    if not checkpoint.is_file():
        sys.exit(f"{checkpoint} does not exist: train further, or pick a step with a checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "text_config.json"):
        shutil.copy2(run_dir / name, out / name)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(out / "model.safetensors"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN_DIR[,RUN_DIR...]",
                        help="the first name is the one that must win (eclip); several RUN_DIRs: their mean")
    parser.add_argument("--step", type=int, help="compare the checkpoints of this step (default: the final weights)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "compare", help="exported runs and reports")
    parser.add_argument("--tasks", default="retrieval,matching,clustering",
                        help="tasks scored (default retrieval,matching,clustering: no train split to embed)")
    parser.add_argument("--baselines", default="", help="baselines scored beside each run (default none)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    config = load_eval_config(tasks=[t for t in args.tasks.split(",") if t],
                              baselines=[b for b in args.baselines.split(",") if b])
    reports = {}  # name -> one report per RUN_DIR
    for name, runs in (entry.split("=", 1) for entry in args.runs):
        reports[name] = []
        for index, run in enumerate(Path(run) for run in runs.split(",")):
            label = name if index == 0 else f"{name}-{index + 1}"  # the first keeps the single-run folder names
            if args.step:
                run = export_checkpoint(run, args.step, args.work / f"{label}-step{args.step}")
            reports[name].append(evaluate(run, args.data, args.work / f"{label}-report", config))

    names = list(reports)
    lines = ["| score | " + " | ".join(names) + f" | {names[0]} / {names[1]} |" if len(names) > 1 else "",
             "| --- " * (len(names) + 2) + "|"]
    rows = []
    for label, key in COMPARED:
        per_run = {name: [lookup(report, key) for report in reports[name]] for name in names}
        if any(value is None for values in per_run.values() for value in values):
            continue
        values = [sum(per_run[name]) / len(per_run[name]) for name in names]
        ratio = values[0] / values[1] if len(values) > 1 and values[1] else float("nan")
        rows.append({"score": label, "key": key, **dict(zip(names, values)), "runs": per_run, "ratio": ratio,
                     "must_win": key in MUST_WIN, "wins": len(values) < 2 or values[0] > values[1]})
        mark = " (must win: " + ("yes" if rows[-1]["wins"] else "NO") + ")" if key in MUST_WIN else ""
        cells = [f"{value:.4f}" + (" (" + ", ".join(f"{v:.4f}" for v in per_run[name]) + ")"
                                   if len(per_run[name]) > 1 else "") for name, value in zip(names, values)]
        lines.append(f"| {label}{mark} | " + " | ".join(cells) + f" | {ratio:.4f} |")
    steps = {name: [report["model"]["steps"] for report in runs] for name, runs in reports.items()}
    header = (f"Objectives compared on {args.data} (test {reports[names[0]][0]['splits']['test']} products), steps "
              f"{steps}; with several runs a cell is their mean (each run's score in brackets).")
    table = header + "\n\n" + "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {name: [report["seconds"] for report in runs] for name, runs in reports.items()}
    (args.out / "eval.json").write_text(json.dumps({"data": str(args.data), "steps": steps, "rows": rows,
                                                    "seconds": seconds}, indent=1))
    (args.out / "eval.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
