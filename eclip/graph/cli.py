"""`eclip graph train|eval`: metapath2vec on the product graph."""

from __future__ import annotations

from pathlib import Path

from eclip.config import add_arguments, add_set_argument

CONFIG_HELP = "a config with [train] and [eval] tables: a file, or a name shipped with eclip (default: default)"


def _add_graph(sub) -> None:
    p = sub.add_parser(
        "graph", help="metapath2vec / metapath2vec++ embeddings of the product graph (Dong et al. 2017)",
        description="Build a graph of products, brands, category levels, attribute values and catalog groups; "
                    "embed it with meta-path random walks and skip-gram (train); score the embeddings by "
                    "category classification and clustering NMI against baselines (eval).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    from eclip.graph.config import GraphConfig
    defaults = GraphConfig()

    train = actions.add_parser("train", help="walk the graph and train node embeddings into RUN_DIR")
    train.add_argument("--data", type=Path, required=True, help="a DATA_DIR written by `eclip prepare`, or a .csv/.parquet products file")
    train.add_argument("--out", type=Path, required=True, help="RUN_DIR")
    train.add_argument("--config", metavar="NAME_OR_FILE", help=CONFIG_HELP)
    train.add_argument("--force", action="store_true", help="retrain even if RUN_DIR holds a finished run")
    add_set_argument(train, "train.walk_length=41")
    add_arguments(train, defaults, "options (override --config)", part=("train",))

    evaluate = actions.add_parser("eval", help="category classification (macro/micro F1) and clustering NMI, one table")
    evaluate.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="runs of `eclip graph train`")
    evaluate.add_argument("--data", type=Path, required=True, help="the products the runs were trained on (labels, titles)")
    evaluate.add_argument("--embeddings", type=Path, metavar="EMB_DIR",
                          help="EMB_DIR with e-CLIP embeddings.parquet (image/text/fused): also scored alone and concatenated")
    evaluate.add_argument("--config", metavar="NAME_OR_FILE", help=CONFIG_HELP)
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="also write eval.json and eval.md here")
    add_set_argument(evaluate, "eval.repeats=5")
    add_arguments(evaluate, defaults, "options (override --config)", part=("eval",))
    p.set_defaults(handler=_run_graph)


def _run_graph(args) -> int:
    from eclip.config import apply_arguments
    from eclip.graph.config import load_config

    config = apply_arguments(load_config(args.config), args, part=(args.action,))
    if args.action == "train":
        from eclip.graph.train import train_graph

        summary = train_graph(args.data, args.out, config.train, force=args.force)
        if summary["reused"]:
            print(f"{args.out} already holds this run (--force retrains)")
        if summary["data_changed"]:
            print(f"{args.out} held this run on an older version of {args.data}: retrained")
        print(f"{summary['graph']}; {summary['walks']} walks at {summary['walks_per_second']:,.0f} walks/s; "
              f"{summary['pairs']:,} pairs at {summary['pairs_per_second']:,.0f} pairs/s, loss {summary['last_loss']:.3f}; "
              f"{summary['products_embedded']}/{summary['products']} products embedded -> {args.out}")
        return 0
    import json

    from eclip.files import output_folder
    from eclip.graph.evaluate import evaluate_runs, markdown_table

    if args.out:
        output_folder(args.out)  # before the evaluation, so a bad --out does not waste it
    report = evaluate_runs(args.data, args.runs, args.embeddings, config.eval, config.train.brand_max_words,
                           config.train.brand_min_count)
    table = markdown_table(report)
    print(f"{report['products']} products, {report['classes']} categories at level {report['label_level']}; "
          f"the runs walked {', '.join(report['walked_node_types'])} (no category nodes)\n{table}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.out:
        (args.out / "eval.json").write_text(json.dumps(report, indent=2))
        (args.out / "eval.md").write_text(table + "\n")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_graph]
