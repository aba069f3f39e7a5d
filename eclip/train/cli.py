"""`eclip train` and `eclip distill`: the training subsystem's subcommands."""

from __future__ import annotations

from pathlib import Path

from eclip.config import add_arguments, add_set_argument
from eclip.configs import list_configs


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="pre-train the e-CLIP dual encoder on prepared data (e-CLIP §3.3)",
        description="Contrastive image-title pre-training with catalogue soft labels, gradient caching and a "
                    "batch-size schedule. RUN_DIR receives model.safetensors, tokenizer, config, checkpoints/, "
                    "metrics.jsonl and curves.png. Every config field can be overridden below.")
    p.add_argument("--data", type=Path, required=True, help="a DATA_DIR written by `eclip prepare`")
    p.add_argument("--out", type=Path, required=True, help="RUN_DIR")
    p.add_argument("--config", default="tiny", metavar="NAME_OR_FILE",
                   help=f"a training recipe shipped with eclip ({', '.join(list_configs('train'))}) or a .toml/.json "
                        "file (default tiny)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its latest checkpoint with its saved config (overrides still apply)")
    add_set_argument(p, "model.vision.width=96")
    from eclip.train.config import Config
    add_arguments(p, Config(), "config overrides (default: the config's value)")
    p.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from eclip.config import apply_arguments
    from eclip.train.config import load_config
    from eclip.train.loop import train

    saved = args.out / "config.json"
    config = apply_arguments(load_config(saved if args.resume and saved.is_file() else args.config), args)
    record = train(args.data, args.out, config, resume=args.resume)
    print(f"step {record['step']}: loss {record['loss']:.4f}, temperature {record['temperature']:.4f}, "
          f"{record['pairs_per_s']:.0f} pairs/s -> {args.out}")
    print(_selection_line(args.out))
    return 0


def _selection_line(run_dir: Path) -> str:
    """Which step's weights the run kept, and whether they score below the untrained towers on val."""
    import json
    from eclip.train.loop import SELECTION_FILE

    selection = json.loads((run_dir / SELECTION_FILE).read_text())
    if selection.get("score") is None:
        return f"kept: step {selection['step']} ({selection['reason']})"
    untrained = "unknown" if selection["untrained_score"] is None else f"{selection['untrained_score']:.4f}"
    line = (f"kept: step {selection['step']} of {selection['last_step']}, val criterion {selection['score']:.4f} "
            f"(untrained {untrained}; {SELECTION_FILE})")
    if selection["below_untrained"]:
        line += "\nwarning: the kept model scores below the untrained towers on val (select = last)"
    elif selection["step"] == 0:
        line += "\nwarning: no validation beat the untrained towers: the run keeps their weights"
    return line


def _add_distill(sub) -> None:
    p = sub.add_parser(
        "distill", help="train a fast query encoder for text search from a trained model's text tower",
        description="Distil RUN_DIR's text tower into a query encoder (a bag of word pieces and an MLP, about 25x "
                    "cheaper per query) trained to reproduce the tower's vectors on DATA_DIR's train titles and "
                    "query-like fragments of them. Writes RUN_DIR/query_encoder.{safetensors,json}; the JSON "
                    "holds its test-split agreement with the tower and text->image recall with each. "
                    "`eclip serve` uses it for search queries. An encoder distilled from the same weights, data "
                    "and options is reused.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a finished `eclip train` run")
    p.add_argument("--data", type=Path, required=True, metavar="DATA_DIR", help="a DATA_DIR written by `eclip prepare`")
    from eclip.train.config import DistillConfig
    add_arguments(p, DistillConfig(), "distillation options")
    add_set_argument(p, "epochs=12")
    p.add_argument("--force", action="store_true", help="distil again even if the encoder is up to date")
    p.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from eclip.config import apply_arguments
    from eclip.train.config import DistillConfig
    from eclip.train.distill import distill

    config = apply_arguments(DistillConfig(), args)
    report = distill(args.model, args.data, config, force=args.force)
    test = report["test"]
    where = args.model / "query_encoder.json"
    if test is None:
        print(f"query encoder -> {where} (the data has no test split to measure it on)")
    else:
        print(f"query encoder -> {where}{' (up to date, reused)' if report['reused'] else ''}: on {test['products']} "
              f"test products, cosine to the text tower {test['cosine_titles']:.3f} (titles), "
              f"{test['cosine_queries']:.3f} (query fragments); text->image R@10 {test['t2i']['student']['r10']:.3f} "
              f"(text tower {test['t2i']['teacher']['r10']:.3f}); {test['ms_per_query']['student']:.2f} ms per "
              f"query against {test['ms_per_query']['teacher']:.2f} ms")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_train, _add_distill]
