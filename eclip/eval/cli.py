"""`eclip eval` and `eclip predict`: the downstream tasks and single-product labels."""

from __future__ import annotations

from pathlib import Path

from eclip.config import add_set_argument
from eclip.errors import EclipError


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_eval(sub) -> None:
    from eclip.eval.config import BASELINES
    from eclip.eval.tasks import TASK_NAMES

    p = sub.add_parser(
        "eval", help="score the model on the e-CLIP downstream tasks against baselines, in one report",
        description="Retrieval, category classification (zero-shot and linear probe, every level), attribute "
                    "extraction, product matching, clustering and adult recognition. Heads train on the train "
                    "split, thresholds come from val, scores are on test. Writes report.json, report.md and "
                    "PNG plots to REPORT_DIR (new or holding only those), and the fitted heads to RUN_DIR/heads for "
                    "`eclip predict`: a task it fits heads for replaces that task's earlier heads, the others stay.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a finished `eclip train` run")
    p.add_argument("--data", type=Path, required=True, metavar="DATA_DIR", help="a DATA_DIR written by `eclip prepare`")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR", help="output folder")
    p.add_argument("--tasks", type=_names, metavar="A,B",
                   help=f"only these tasks (default all: {','.join(TASK_NAMES)})")
    p.add_argument("--baselines", type=_names, metavar="A,B",
                   help=f"only these baselines (default all: {','.join(BASELINES)}); '' for none")
    p.add_argument("--config", metavar="NAME_OR_FILE",
                   help="eval options as TOML: a file, or a name shipped with eclip (default: default)")
    add_set_argument(p, "probe_max_iter=300")
    p.add_argument("--force", action="store_true", help="re-evaluate even if REPORT_DIR holds this very run")
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from eclip.eval.config import load_eval_config
    from eclip.eval.evaluate import evaluate
    from eclip.eval.report import MARKDOWN_FILE, headline_table

    config = load_eval_config(args.config, args.tasks, args.baselines, args.assignments)
    report = evaluate(args.model, args.data, args.out, config, force=args.force)
    splits = ", ".join(f"{split} {count}" for split, count in report["splits"].items())
    reused = " (unchanged: the previous report)" if report["reused"] else ""
    print(f"{args.model} on {args.data} ({splits}){reused}\n\n{headline_table(report)}\n")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {args.out / MARKDOWN_FILE}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="label one product (category, attributes or adult) with the heads `eclip eval` saved",
        description="Embed one image and title with the model of RUN_DIR and apply the task head fitted by "
                    "`eclip eval` (RUN_DIR/heads). Each head reads the image, text or fused vector (chosen on val "
                    "by `eclip eval`); give the inputs its vector needs (an error names them). Heads fit on other "
                    "weights than RUN_DIR's current ones are refused: re-run `eclip eval` after training further.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a run evaluated by `eclip eval`")
    p.add_argument("--task", required=True, choices=["category", "attributes", "adult"])
    p.add_argument("--image", type=Path, help="the product image (any format PIL reads)")
    p.add_argument("--title", help="the product title")
    p.add_argument("--top", type=int, default=3, help="classes shown per head (default 3)")
    p.set_defaults(handler=_run_predict)


def _run_predict(args) -> int:
    from eclip.eval.heads import predict

    if args.top < 1:
        raise EclipError("--top must be positive")
    result = predict(args.model, args.task, args.image, args.title, top=args.top)
    decision = result.pop("adult_decision", None)
    for head, ranked in result.items():
        print(f"{head}: " + ", ".join(f"{label} ({probability:.3f})" for label, probability in ranked))
    if decision:
        verdict = "restricted" if decision["restricted"] else "not restricted"
        print(f"adult: {verdict} (p = {decision['probability']:.3f}, threshold {decision['threshold']:.3f}: "
              f"90% recall on val)")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_eval, _add_predict]
