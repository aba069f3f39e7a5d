"""`eclip rec train|eval|recommend`: sequential recommendation."""

from __future__ import annotations

from pathlib import Path

from eclip.config import add_set_argument
from eclip.errors import EclipError


def _add_rec(sub) -> None:
    p = sub.add_parser(
        "rec", help="BERT4Rec sequential recommendation, optionally with e-CLIP content item embeddings",
        description="Train BERT4Rec (bidirectional, Cloze) or its SASRec-style causal twin on interaction "
                    "sequences, from scratch or from another run's weights (train), score runs, their ensemble and "
                    "the most-popular baseline by leave-one-out HR/NDCG/MRR with full ranking and 100 sampled "
                    "negatives (eval), and list a user's next items (recommend).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train (or --resume) a run into RUN_DIR")
    train.add_argument("sequences", type=Path, help="'user item1 item2 ...' lines (.txt, '#' lines are comments) or a "
                                                    "Parquet of user, item, timestamp")
    train.add_argument("--out", type=Path, required=True, help="RUN_DIR")
    train.add_argument("--config", metavar="NAME_OR_FILE",
                       help="a TOML with [model] and [train] tables, or a recipe shipped with eclip (beauty: "
                            "Amazon Beauty's); default: the dataclass defaults")
    add_set_argument(train, "model.causal=true --set train.epochs=5; --set train.softmax_negatives=1024 for "
                            "catalogues too large for the full softmax, --set train.next_item_weight=1 to train "
                            "BERT4Rec on next items too (fields: docs/recommendation.md)")
    train.add_argument("--item-features", type=Path, metavar="EMB_DIR",
                       help="EMB_DIR/embeddings.parquet (product_id + embedding columns): content item embeddings, "
                            "so items never seen in training can be recommended")
    train.add_argument("--item-feature-column", default="fused", help="embedding column to use (default fused)")
    train.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last finished epoch")
    train.add_argument("--init", type=Path, metavar="INIT_RUN",
                       help="start from the best weights of another run on the same items (same dim, layers, "
                            "heads, max_len), e.g. BERT4Rec from a SASRec-style run (docs/recommendation.md)")
    train.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")

    evaluate = actions.add_parser("eval", help="leave-one-out metrics of runs and the most-popular baseline, one table")
    evaluate.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="runs trained on the same sequences and split")
    evaluate.add_argument("--sequences", type=Path, help="read the sequences from here instead of the recorded path")
    evaluate.add_argument("--split", choices=("test", "val"), default="test", help="leave-one-out case (default test)")
    evaluate.add_argument("--negatives", type=int, default=100, help="sampled negatives per case, 0 to skip (default 100)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the negative sampling (default 0)")
    evaluate.add_argument("--ensemble", action="store_true",
                          help="also score all the runs together as one model (the mean of their log-probabilities), "
                               "e.g. a SASRec-style run and the BERT4Rec run started from it")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="also write eval.json and eval.md here")

    recommend = actions.add_parser("recommend", help="top-k next items for a user of the sequences or a given history")
    recommend.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                           help="a run, or several on the same items: they then recommend as their ensemble")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user of the run's sequences: recommend after their whole history")
    who.add_argument("--items", nargs="+", metavar="ITEM",
                     help="a history of item ids, oldest first (needs only RUN_DIR, not the sequences)")
    recommend.add_argument("--sequences", type=Path,
                           help="with --user: read the sequences from here instead of the recorded path")
    recommend.add_argument("-k", "--top", type=int, default=10, help="how many items (default 10)")
    p.set_defaults(handler=_run_rec)


def _run_rec(args) -> int:
    import json

    if args.action == "train":
        from eclip.rec.config import RecConfig
        from eclip.rec.train import train

        saved = args.out / "config.json"
        if args.resume and not args.config and saved.is_file():
            # the run's own config: --resume needs no --config
            config = RecConfig.from_dict(json.loads(saved.read_text()), str(saved))
        else:
            config = RecConfig.from_toml(args.config) if args.config else RecConfig()
        config = config.override(args.assignments)
        summary = train(args.out, args.sequences, config, args.item_features, args.item_feature_column,
                        resume=args.resume, device=args.device, init=args.init)
        for note in summary["notes"]:
            print(f"note: {note}")
        print(f"epoch {summary['epoch']}: best validation NDCG@10 {summary['best_val']:.4f} at epoch "
              f"{summary['best_epoch']}; {summary['seconds']:.0f}s training -> {args.out}")
        return 0
    if args.action == "eval":
        from eclip.files import output_folder
        from eclip.rec.report import evaluate_runs, markdown_table

        if args.negatives < 0 or args.seed < 0:
            raise EclipError("--negatives and --seed must be 0 or more")
        if args.ensemble and len(args.runs) < 2:
            raise EclipError("--ensemble needs at least two RUN_DIRs")
        if args.out:
            output_folder(args.out)  # before the evaluation, so a bad --out does not waste it
        report = evaluate_runs(args.runs, args.sequences, args.split, args.negatives, args.seed,
                               [tuple(range(len(args.runs)))] if args.ensemble else [])
        table = markdown_table(report)
        print(f"{report['cases']} {report['split']} cases, {report['items']} items, {report['cold_items']} cold items\n{table}")
        if args.out:
            (args.out / "eval.json").write_text(json.dumps(report, indent=2))
            (args.out / "eval.md").write_text(table)
        return 0
    from eclip.rec.report import recommend, user_history
    from eclip.rec.run import load_run

    if args.top < 1:
        raise EclipError("-k must be positive")
    runs = [load_run(run_dir, args.sequences, with_data=args.user is not None) for run_dir in args.runs]
    for rank, (item, score) in enumerate(recommend(runs, args.items or user_history(runs[0], args.user), args.top), 1):
        print(f"{rank:>3}  {score:.3f}  {item}")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_rec]
