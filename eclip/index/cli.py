"""`eclip embed` and `eclip search`: building an EMB_DIR and querying it."""

from __future__ import annotations

from pathlib import Path

from eclip.errors import EclipError


def _add_embed(sub) -> None:
    from eclip.config import add_arguments, add_set_argument
    from eclip.index.config import IndexConfig

    p = sub.add_parser(
        "embed", help="image, text and fused embeddings of every product, plus a FAISS index",
        description="Embed every product of DATA_DIR with the model of RUN_DIR into EMB_DIR/embeddings.parquet/ "
                    "(one part per DATA_DIR shard: product_id, split, category, title, image, text, fused) and "
                    "index one of the vector columns in EMB_DIR/index.faiss. Shards are read batch by batch; a "
                    "re-run keeps every finished part whose shard and weights are unchanged (a killed run resumes), "
                    "and an unchanged EMB_DIR is reused. Under torchrun, rank r embeds shards r, r+W, ... and "
                    "rank 0 builds the index.")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a finished `eclip train` run")
    p.add_argument("--data", type=Path, required=True, metavar="DATA_DIR", help="a DATA_DIR written by `eclip prepare`")
    p.add_argument("--out", type=Path, required=True, metavar="EMB_DIR", help="output folder")
    p.add_argument("--batch-size", type=int, default=256, help="products per forward pass (default 256)")
    p.add_argument("--force", action="store_true", help="re-embed every shard even if EMB_DIR is up to date")
    p.add_argument("--discard-served-updates", action="store_true",
                   help="re-embed even if EMB_DIR/serving holds products added or removed through `eclip serve` "
                        "(they are deleted with the old EMB_DIR)")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: this process (default); spark: one Spark task per shard, each loading the "
                             "model once with one torch thread, writing the same parts (needs pip install "
                             "'eclip[spark]' and a folder every executor can read and write)")
    engine.add_argument("--spark-master", metavar="URL", help="Spark master (default local[2])")
    add_set_argument(p, "nprobe=64")
    add_arguments(p, IndexConfig(), "index")
    p.set_defaults(handler=_run_embed)


def _run_embed(args) -> int:
    from eclip.config import apply_arguments
    from eclip.index.config import IndexConfig
    from eclip.index.embed import embed_command

    if args.batch_size < 1:
        raise EclipError("--batch-size must be positive")
    if args.engine != "spark" and args.spark_master:
        raise EclipError("--spark-master needs --engine spark")
    config = apply_arguments(IndexConfig(), args)
    meta = embed_command(args.model, args.data, args.out, config, args.batch_size, force=args.force,
                         discard_served_updates=args.discard_served_updates, engine=args.engine,
                         spark_master=args.spark_master)
    if "rank" in meta:
        print(f"rank {meta['rank']}: {meta['embedded_parts']} part(s) embedded; rank 0 builds the index")
        return 0
    counts = ", ".join(f"{split} {count}" for split, count in meta["counts"].items())
    reused = " (up to date, reused)" if meta["reused"] else f" ({meta['embedded_parts']} of {meta['parts']} parts embedded)"
    print(f"{meta['products']} products ({counts}), {meta['dim']}-d, {meta['index']['type']} index over "
          f"{meta['index']['vectors']} vectors, {meta['seconds']:.1f}s -> {args.out}{reused}")
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
    from eclip.index.embed import search

    if args.top < 1:
        raise EclipError("--top must be positive")
    for hit in search(args.model, args.index, args.query, args.top):
        print(f"{hit['rank']:>3}  {hit['score']:.3f}  {hit['product_id']}  {hit['title']}  [{hit['category']}]")
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_embed, _add_search]
