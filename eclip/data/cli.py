"""`eclip offers` and `eclip prepare`: the data subsystem's subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from eclip.config import add_arguments, add_set_argument


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=COLUMN, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="clean, filter and deduplicate a catalogue into Parquet shards (e-CLIP §3.2)",
        description="Read a CSV/JSONL/Parquet catalogue, reject invalid products and duplicates with a "
                    "reason each, and write Parquet shards, rejected.parquet, catalog.duckdb and report.json.")
    p.add_argument("catalog", type=Path, help="catalogue file: .csv, .tsv, .jsonl/.ndjson or .parquet; with --engine "
                                              "spark also a folder or glob of such part files")
    p.add_argument("--out", type=Path, required=True,
                   help="output DATA_DIR: a new or empty folder, or a DATA_DIR an earlier `eclip prepare` wrote")
    p.add_argument("--map", dest="mapping", type=_key_value, action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD from the catalogue's COLUMN, e.g. --map product_id=id --map title=productDisplayName; "
                        "--map image_bytes=COLUMN reads each image from a Parquet binary column instead of a file")
    p.add_argument("--image-template", metavar="TEMPLATE",
                   help="build the image path from columns, e.g. 'images/{id}.jpg' (paths are relative to the catalogue's folder)")
    p.add_argument("--category-columns", metavar="A,B,C",
                   help="join these columns into the category path 'a > b > c'")
    p.add_argument("--attribute-columns", metavar="A,B",
                   help="also treat these columns as attributes (attr_<name>)")
    from eclip.data.config import PrepareConfig
    add_arguments(p, PrepareConfig(), "filters and deduplication")
    add_set_argument(p, "near_duplicate_threshold=0.99")
    p.add_argument("--force", action="store_true", help="rebuild even if DATA_DIR holds a finished run with the same input and options")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "spark"), default="local",
                        help="local: this machine's cores (default, the reference); spark: the same stages on Spark, "
                             "the same output (needs pip install 'eclip[spark]')")
    engine.add_argument("--spark-master", metavar="URL",
                        help="Spark master, e.g. spark://host:7077 or yarn (default local[--workers])")
    engine.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting, e.g. --spark-conf spark.executor.memory=8g (repeatable)")
    p.set_defaults(handler=_run_prepare)


def _run_prepare(args) -> int:
    from eclip.config import apply_arguments
    from eclip.data.catalog import ColumnMapping
    from eclip.data.config import PrepareConfig
    from eclip.data.prepare import prepare

    from eclip.errors import EclipError

    if args.engine != "spark" and (args.spark_master or args.spark_conf):
        raise EclipError("--spark-master and --spark-conf need --engine spark")
    mapping = ColumnMapping.from_cli(args.mapping, args.image_template, args.category_columns, args.attribute_columns)
    spark_conf = []
    if args.engine == "spark":
        from eclip.data.spark import parse_conf, require_pyspark

        require_pyspark()
        spark_conf = parse_conf(args.spark_conf)
    config = apply_arguments(PrepareConfig(), args)
    report = prepare(args.catalog, args.out, mapping, config, force=args.force, engine=args.engine,
                     spark_master=args.spark_master, spark_conf=spark_conf)
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(report["rejected"].items())) or "none"
    keep_first = report["keep_first_duplicate_groups"]
    capped = (f" ({keep_first} linked sets of more than {config.max_duplicate_group} rows resolved keep-first)"
              if keep_first and config.max_duplicate_group > 1 else "")
    print(f"{report['input_rows']} rows: {report['accepted']} accepted, {sum(report['rejected'].values())} rejected "
          f"({rejected}); {report['duplicate_groups']} duplicate groups{capped}; {report['seconds']:.1f}s -> {args.out}")
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


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_offers, _add_prepare]
