"""The `eclip` command line. Every subcommand parses here and calls into the library.

Library modules are imported inside each handler so that `eclip --help` stays fast.
Bad input raises `EclipError`, printed as one line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eclip.errors import EclipError


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=COLUMN, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


# ---------------------------------------------------------------- data preparation
def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="clean, filter and deduplicate a catalogue into Parquet shards (e-CLIP §3.2)",
        description="Read a CSV/JSONL/Parquet catalogue, reject invalid products and duplicates with a "
                    "reason each, and write Parquet shards, rejected.parquet, catalog.duckdb and report.json.")
    p.add_argument("catalog", type=Path, help="catalogue file: .csv, .jsonl/.ndjson or .parquet")
    p.add_argument("--out", type=Path, required=True,
                   help="output DATA_DIR: a new or empty folder, or a DATA_DIR an earlier `eclip prepare` wrote")
    p.add_argument("--map", dest="mapping", type=_key_value, action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD from the catalogue's COLUMN, e.g. --map product_id=id --map title=productDisplayName")
    p.add_argument("--image-template", metavar="TEMPLATE",
                   help="build the image path from columns, e.g. 'images/{id}.jpg' (paths are relative to the catalogue's folder)")
    p.add_argument("--category-columns", metavar="A,B,C",
                   help="join these columns into the category path 'a > b > c'")
    p.add_argument("--attribute-columns", metavar="A,B",
                   help="also treat these columns as attributes (attr_<name>)")
    from eclip.data.config import PrepareConfig
    PrepareConfig.add_arguments(p)
    p.add_argument("--force", action="store_true", help="rebuild even if DATA_DIR holds a finished run with the same input and options")
    p.set_defaults(handler=_run_prepare)


def _run_prepare(args) -> int:
    from eclip.data.catalog import ColumnMapping
    from eclip.data.config import PrepareConfig
    from eclip.data.prepare import prepare

    mapping = ColumnMapping.from_cli(args.mapping, args.image_template, args.category_columns, args.attribute_columns)
    report = prepare(args.catalog, args.out, mapping, PrepareConfig.from_args(args), force=args.force)
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(report["rejected"].items())) or "none"
    print(f"{report['input_rows']} rows: {report['accepted']} accepted, {sum(report['rejected'].values())} rejected "
          f"({rejected}); {report['duplicate_groups']} duplicate groups; {report['seconds']:.1f}s -> {args.out}")
    return 0


def _add_offers(sub) -> None:
    p = sub.add_parser(
        "offers", help="generate realistic multi-seller offers (shared catalog_id) from a real catalogue",
        description="For each product write K seller offers: re-encoded, resized, cropped, padded or watermarked "
                    "images and titles with seller tags, reordered or dropped words, typos and other casing. "
                    "The output catalogue carries catalog_id (the ground truth) and offers_truth.parquet.")
    p.add_argument("catalog", type=Path, help="catalogue in the default layout (product_id, title, image, ...)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: catalog.csv + images/ + offers_truth.parquet; new, empty, or an earlier "
                        "`eclip offers` OUT")
    p.add_argument("--per-product", type=int, default=3, metavar="K", help="offers per product, the original included (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N products")
    p.add_argument("--force", action="store_true", help="regenerate even if OUT is complete")
    p.set_defaults(handler=_run_offers)


def _run_offers(args) -> int:
    from eclip.data.offers import make_offers

    summary = make_offers(args.catalog, args.out, per_product=args.per_product, seed=args.seed,
                          limit=args.limit, force=args.force)
    print(f"{summary['products']} products -> {summary['offers']} offers in {args.out / 'catalog.csv'}")
    return 0


# ---------------------------------------------------------------- pre-training
def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="pre-train the e-CLIP dual encoder on prepared data (e-CLIP §3.3)",
        description="Contrastive image-title pre-training with catalogue soft labels, gradient caching and a "
                    "batch-size schedule. RUN_DIR receives model.safetensors, tokenizer, config, checkpoints/, "
                    "metrics.jsonl and curves.png. Every config field can be overridden below.")
    p.add_argument("--data", type=Path, required=True, help="a DATA_DIR written by `eclip prepare`")
    p.add_argument("--out", type=Path, required=True, help="RUN_DIR")
    p.add_argument("--config", default="tiny", metavar="NAME_OR_FILE",
                   help="a config from configs/ (tiny, small, b32-bert) or a .toml/.json file (default tiny)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its latest checkpoint with its saved config (overrides still apply)")
    from eclip.train.config import add_override_arguments
    add_override_arguments(p)
    p.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from eclip.train.config import apply_overrides, load_config
    from eclip.train.loop import train

    saved = args.out / "config.json"
    config = apply_overrides(load_config(saved if args.resume and saved.is_file() else args.config), args)
    record = train(args.data, args.out, config, resume=args.resume)
    print(f"step {record['step']}: loss {record['loss']:.4f}, temperature {record['temperature']:.4f}, "
          f"{record['pairs_per_s']:.0f} pairs/s -> {args.out}")
    return 0


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
    from eclip.train.config import add_override_arguments
    from eclip.train.distill import DistillConfig
    add_override_arguments(p, DistillConfig(), title="distillation options")
    p.add_argument("--force", action="store_true", help="distil again even if the encoder is up to date")
    p.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from eclip.train.config import apply_overrides
    from eclip.train.distill import DistillConfig, distill

    config = apply_overrides(DistillConfig(), args)
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


# ---------------------------------------------------------------- product graph
def _add_graph(sub) -> None:
    p = sub.add_parser(
        "graph", help="metapath2vec / metapath2vec++ embeddings of the product graph (Dong et al. 2017)",
        description="Build a graph of products, brands, category levels, attribute values and catalog groups; "
                    "embed it with meta-path random walks and skip-gram (train); score the embeddings by "
                    "category classification and clustering NMI against baselines (eval).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    from eclip.graph.config import GraphEvalConfig, GraphTrainConfig, add_arguments

    train = actions.add_parser("train", help="walk the graph and train node embeddings into RUN_DIR")
    train.add_argument("--data", type=Path, required=True, help="a DATA_DIR written by `eclip prepare`, or a .csv/.parquet products file")
    train.add_argument("--out", type=Path, required=True, help="RUN_DIR")
    train.add_argument("--config", type=Path, help="TOML file with [train] and [eval] tables (e.g. configs/graph.toml)")
    train.add_argument("--force", action="store_true", help="retrain even if RUN_DIR holds a finished run")
    add_arguments(train, GraphTrainConfig)

    evaluate = actions.add_parser("eval", help="category classification (macro/micro F1) and clustering NMI, one table")
    evaluate.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="runs of `eclip graph train`")
    evaluate.add_argument("--data", type=Path, required=True, help="the products the runs were trained on (labels, titles)")
    evaluate.add_argument("--embeddings", type=Path, metavar="EMB_DIR",
                          help="EMB_DIR with e-CLIP embeddings.parquet (image/text/fused): also scored alone and concatenated")
    evaluate.add_argument("--config", type=Path, help="TOML file with [train] and [eval] tables (e.g. configs/graph.toml)")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="also write eval.json and eval.md here")
    add_arguments(evaluate, GraphEvalConfig)
    p.set_defaults(handler=_run_graph)


def _run_graph(args) -> int:
    from eclip.graph.config import load_config, with_arguments

    train_config, eval_config = load_config(args.config)
    if args.action == "train":
        from eclip.graph.train import train_graph

        summary = train_graph(args.data, args.out, with_arguments(train_config, args), force=args.force)
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
    report = evaluate_runs(args.data, args.runs, args.embeddings, with_arguments(eval_config, args),
                           train_config.brand_max_words, train_config.brand_min_count)
    table = markdown_table(report)
    print(f"{report['products']} products, {report['classes']} categories at level {report['label_level']}; "
          f"the runs walked {', '.join(report['walked_node_types'])} (no category nodes)\n{table}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.out:
        (args.out / "eval.json").write_text(json.dumps(report, indent=2))
        (args.out / "eval.md").write_text(table + "\n")
    return 0


# ---------------------------------------------------------------- applications
def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="image, text and fused embeddings of every product, plus a FAISS index",
        description="Embed every product of DATA_DIR with the model of RUN_DIR into EMB_DIR/embeddings.parquet "
                    "(product_id, split, category, title, image, text, fused) and index one of the vector "
                    "columns in EMB_DIR/index.faiss. An unchanged EMB_DIR is reused.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a finished `eclip train` run")
    p.add_argument("--data", type=Path, required=True, metavar="DATA_DIR", help="a DATA_DIR written by `eclip prepare`")
    p.add_argument("--out", type=Path, required=True, metavar="EMB_DIR", help="output folder")
    p.add_argument("--index", dest="index_type", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                   help="FAISS index: flat (exact), ivf (inverted lists), hnsw (graph); auto = flat up to "
                        "200,000 products, else ivf (default auto)")
    p.add_argument("--index-vectors", default="fused", choices=["image", "text", "fused"],
                   help="which vectors the index holds (default fused)")
    p.add_argument("--batch-size", type=int, default=256, help="products per forward pass (default 256)")
    p.add_argument("--force", action="store_true", help="re-embed even if EMB_DIR is up to date")
    p.add_argument("--discard-served-updates", action="store_true",
                   help="re-embed even if EMB_DIR/serving holds products added or removed through `eclip serve` "
                        "(they are deleted with the old EMB_DIR)")
    p.set_defaults(handler=_run_embed)


def _run_embed(args) -> int:
    from eclip.tasks.embeddings import embed_command

    if args.batch_size < 1:
        raise EclipError("--batch-size must be positive")
    meta = embed_command(args.model, args.data, args.out, args.index_type, args.index_vectors, args.batch_size,
                         force=args.force, discard_served_updates=args.discard_served_updates)
    counts = ", ".join(f"{split} {count}" for split, count in meta["counts"].items())
    reused = " (up to date, reused)" if meta["reused"] else ""
    print(f"{meta['products']} products ({counts}), {meta['dim']}-d, {meta['index']['type']} index over "
          f"{meta['index']['vectors']} vectors, {meta['seconds']:.1f}s -> {args.out}{reused}")
    return 0


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_eval(sub) -> None:
    from eclip.tasks.config import BASELINES, TASKS

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
    p.add_argument("--tasks", type=_names, metavar="A,B", help=f"only these tasks (default all: {','.join(TASKS)})")
    p.add_argument("--baselines", type=_names, metavar="A,B",
                   help=f"only these baselines (default all: {','.join(BASELINES)}); '' for none")
    p.add_argument("--config", type=Path, help="eval options as TOML (default configs/eval.toml)")
    p.add_argument("--force", action="store_true", help="re-evaluate even if REPORT_DIR holds this very run")
    p.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from eclip.tasks.config import load_eval_config
    from eclip.tasks.evaluate import evaluate
    from eclip.tasks.report import MARKDOWN_FILE, headline_table

    config = load_eval_config(args.config, args.tasks, args.baselines)
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
    from eclip.tasks.heads import predict

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


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="text search over an EMB_DIR's index: the top products for a query",
        description="Embed QUERY with the text tower of RUN_DIR and print the nearest products of EMB_DIR, with "
                    "the products added and removed through `eclip serve` applied. RUN_DIR must hold the weights "
                    "that embedded EMB_DIR.")
    p.add_argument("query", help='free text, e.g. "red running shoes"')
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="the run that embedded EMB_DIR")
    p.add_argument("--index", type=Path, required=True, metavar="EMB_DIR", help="written by `eclip embed`")
    p.add_argument("--top", type=int, default=10, help="products shown (default 10)")
    p.set_defaults(handler=_run_search)


def _run_search(args) -> int:
    from eclip.tasks.embeddings import search

    if args.top < 1:
        raise EclipError("--top must be positive")
    for hit in search(args.model, args.index, args.query, args.top):
        print(f"{hit['rank']:>3}  {hit['score']:.3f}  {hit['product_id']}  {hit['title']}  [{hit['category']}]")
    return 0


# ---------------------------------------------------------------- sequential recommendation
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
    train.add_argument("--config", type=Path, help="TOML with [model] and [train] tables (e.g. configs/rec-beauty.toml)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.NAME=VALUE",
                       help="override a config value, e.g. --set model.causal=true --set train.epochs=5; "
                            "--set train.softmax_negatives=1024 for catalogues too large for the full softmax, "
                            "--set train.next_item_weight=1 to train BERT4Rec on next items too "
                            "(fields: docs/recommendation.md)")
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
        from eclip.rec.train import RecConfig, train

        saved = args.out / "config.json"
        if args.resume and not args.config and saved.is_file():
            recorded = json.loads(saved.read_text())  # the run's own config: --resume needs no --config
            config = RecConfig.from_dict({k: recorded[k] for k in ("model", "train")}, str(saved))
        else:
            config = RecConfig.from_toml(args.config) if args.config else RecConfig()
        config = config.override(args.overrides)
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
    from eclip.rec.train import load_run

    if args.top < 1:
        raise EclipError("-k must be positive")
    runs = [load_run(run_dir, args.sequences, with_data=args.user is not None) for run_dir in args.runs]
    for rank, (item, score) in enumerate(recommend(runs, args.items or user_history(runs[0], args.user), args.top), 1):
        print(f"{rank:>3}  {score:.3f}  {item}")
    return 0


# ---------------------------------------------------------------- search service
def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="product search service and web page over an EMB_DIR (FastAPI + uvicorn)",
        description="Serve text, image and image+text search, similar products, classification, embeddings, "
                    "thumbnails and product updates (journaled in EMB_DIR/serving/) on http://HOST:PORT/ "
                    "(API docs at /docs). Defaults come from configs/serve.toml.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a trained `eclip train` run")
    p.add_argument("--index", type=Path, required=True, metavar="EMB_DIR", help="an `eclip embed` output made with that model")
    p.add_argument("--data", type=Path, metavar="DATA_DIR", help="the prepared products, for thumbnails and details")
    p.add_argument("--config", type=Path, metavar="TOML", help="a file with a [serve] table (default configs/serve.toml)")
    from eclip.serve.config import load_serve_config
    from eclip.train.config import add_override_arguments
    add_override_arguments(p, load_serve_config(), title="service settings (default: configs/serve.toml)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from eclip.serve.app import serve
    from eclip.serve.config import load_serve_config
    from eclip.train.config import apply_overrides

    config = apply_overrides(load_serve_config(args.config), args)
    print(f"serving {args.index} with {args.model} on http://{config.host}:{config.port}/ (API docs at /docs)")
    serve(args.model, args.index, args.data, config)
    return 0


# ---------------------------------------------------------------- registry
# Each entry adds one subcommand; keep them in the order a user meets them.
SUBCOMMANDS = [
    _add_offers,
    _add_prepare,
    _add_train,
    _add_distill,
    _add_graph,
    _add_embed,
    _add_eval,
    _add_predict,
    _add_search,
    _add_rec,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eclip", description="Learn product representations from e-commerce catalogues (e-CLIP).")
    from eclip import __version__
    parser.add_argument("--version", action="version", version=f"eclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except EclipError as error:
        print(f"eclip {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eclip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
