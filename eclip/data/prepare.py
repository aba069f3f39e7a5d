"""`eclip prepare`: catalogue -> validated, deduplicated, split Parquet shards with a reason for every reject.

Three stages, each shaped for a cluster as much as for one machine:
1. per-row (`inspect.inspect_batch`): an Arrow batch in, an Arrow batch out, run by a process pool over
   record batches and spooled to Parquet, so memory stays bounded however large the catalogue is;
2. global: duplicate product ids, boilerplate titles and exact-duplicate keys are DuckDB group-bys over the
   spool (DuckDB spills to disk), near-duplicates a FAISS range search over the descriptors and an ORB check
   of the uncertain pairs (`verify.py`);
3. write: the spool is streamed once more, joined with the decisions, into shards and `rejected.parquet`.

`--engine spark` runs the same stages on Spark (`eclip.data.spark`); this module keeps what both engines share:
the checks before any work, the fingerprint, the report and the atomic publish.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from eclip.config import validate
from eclip.data import store
from eclip.data.catalog import ColumnMapping, read_catalog
from eclip.data.config import PrepareConfig
from eclip.data.dedup import resolve_duplicates, verified_near_duplicates
from eclip.data.descriptors import make_descriptor
from eclip.data.inspection import inspect_batch
from eclip.errors import EclipError
from eclip.files import check_out_folder
from eclip.progress import progress_bar
from eclip.runs.atomic import atomic_write, building_folder, publish_folder

SPOOL = "_spool"

# ---------------------------------------------------------------- stage 1: per row, in worker processes
_worker_state: dict = {}


def _init_worker(root: str, config: dict) -> None:
    # One BLAS thread per worker process: the per-image matrix products are tiny, and BLAS threads would only
    # compete with the other workers for the same cores.
    threadpool_limits(1, "blas")
    cfg = PrepareConfig(**config)
    _worker_state.update(root=Path(root), config=cfg, descriptor=make_descriptor(cfg.near_duplicate_model))


def _inspect_to_spool(index: int, batch: pa.RecordBatch, spool: str) -> int:
    out = inspect_batch(batch, _worker_state["root"], _worker_state["config"], _worker_state["descriptor"])
    path = Path(spool) / f"batch-{index:07d}.parquet"
    atomic_write(path, lambda temporary: pq.write_table(pa.Table.from_batches([out]), temporary, compression="zstd"))
    return out.num_rows


def _run_per_row_stage(batches, root: Path, config: PrepareConfig, spool: Path) -> int:
    spool.mkdir(parents=True)
    workers = config.worker_count()
    rows = 0
    with progress_bar("checking rows", None) as advance:
        if workers == 1:
            with threadpool_limits(1, "blas"):
                _init_worker(str(root), config.to_dict())
                for index, batch in enumerate(batches):
                    rows += _inspect_to_spool(index, batch, str(spool))
                    advance(batch.num_rows)
            return rows
        # forkserver: never fork a process whose threads (DuckDB, torch, rich) may hold locks
        with ProcessPoolExecutor(workers, mp_context=get_context("forkserver"), initializer=_init_worker,
                                 initargs=(str(root), config.to_dict())) as pool:
            pending = set()
            for index, batch in enumerate(batches):
                if len(pending) >= 2 * workers:  # bounded window: never read the catalogue ahead of the workers
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        rows += future.result()
                        advance(future.result())
                pending.add(pool.submit(_inspect_to_spool, index, batch, str(spool)))
            for future in pending:
                rows += future.result()
                advance(future.result())
    return rows


# ---------------------------------------------------------------- stage 2: global decisions
def _global_decisions(spool: Path, config: PrepareConfig) -> tuple[dict, dict, list, dict]:
    """Decisions for rows that passed stage 1: row -> (reason, detail), row -> weak catalog, duplicate-group rows,
    and the report's figures of the duplicate groups."""
    con = duckdb.connect()
    files = str(spool / "batch-*.parquet").replace("'", "''")
    has_catalog = "catalog_id" in pq.read_schema(next(spool.glob("batch-*.parquet"))).names
    catalog = "catalog_id" if has_catalog else "null::varchar"
    con.execute(f"""create temp table candidates as
        select row, product_id, title_norm, image_hash, {catalog} as catalog_id,
               row_number() over (partition by product_id order by row) as id_rank,
               first_value(row) over (partition by product_id order by row) as first_row
        from read_parquet('{files}') where reject_reason is null""")
    decisions: dict[int, tuple[str, str]] = {}
    for row, first_row in con.sql("select row, first_row from candidates where id_rank > 1").fetchall():
        decisions[row] = ("duplicate_product_id", f"same product_id as row {first_row}")
    limit = config.boilerplate_max_images
    for row, images in con.sql(f"""
            select c.row, b.images from candidates c join (
                select title_norm, count(distinct image_hash) as images from candidates where id_rank = 1
                group by title_norm having count(distinct image_hash) > {limit}) b using (title_norm)
            where c.id_rank = 1""").fetchall():
        decisions[row] = ("title_boilerplate", f"title shared by {images} distinct images (limit {limit})")
    rejected_rows = list(decisions)
    con.execute("create temp table rejected_early (row bigint)")
    if rejected_rows:
        con.execute("insert into rejected_early select unnest($1)", [rejected_rows])
    table = con.sql("""select row, product_id, catalog_id,
            dense_rank() over (order by title_norm) - 1 as title_key,
            dense_rank() over (order by image_hash) - 1 as hash_key
        from candidates where row not in (select row from rejected_early) order by row""").to_arrow_table()
    con.close()
    methods = config.dedup_methods()
    rows = table.column("row").to_numpy()
    exact_keys = {}
    if "title" in methods:
        exact_keys["title"] = table.column("title_key").to_numpy()
    if "image_hash" in methods:
        exact_keys["image_hash"] = table.column("hash_key").to_numpy()
    near = None
    if "image_embedding" in methods and len(rows) > 1:
        vectors = descriptors_for(spool, rows)

        def thumbnails(positions: np.ndarray) -> dict[int, bytes]:  # pairs are positions in `rows`
            found = thumbnails_for(spool, rows[positions])
            return {int(k): found[int(rows[k])] for k in positions}

        near = verified_near_duplicates(vectors, config.near_duplicate_threshold,
                                        config.near_duplicate_verify_threshold, thumbnails, config.worker_count())[:2]
    product_ids = table.column("product_id").to_pylist()
    outcome = resolve_duplicates(rows, table.column("catalog_id").to_pylist(), product_ids, exact_keys, near,
                                 config.weak_catalogs, config.max_duplicate_group)
    product_of = dict(zip(rows.tolist(), product_ids))
    weak = {}
    group_rows = []
    for k, row in enumerate(rows.tolist()):
        if outcome.reason[k] is not None:
            decisions[row] = (outcome.reason[k], f"duplicate_of={product_of[outcome.duplicate_of[k]]}")
        if outcome.weak_catalog[k] is not None:
            weak[row] = outcome.weak_catalog[k]
        if outcome.group[k] is not None:
            group_rows.append((product_of[outcome.group[k]], product_ids[k], row, outcome.method[k],
                               outcome.reason[k] is None))
    groups = {"duplicate_group_sizes": {str(size): count for size, count in sorted(outcome.group_sizes.items())},
              "keep_first_duplicate_groups": outcome.keep_first_groups}
    return decisions, weak, group_rows, groups


def _spool_rows(spool: Path, rows: np.ndarray, column: str):
    """Yields, spool file by spool file, the `row` and `column` of the given spool rows (ascending), as tables."""
    for path in sorted(spool.glob("batch-*.parquet")):
        table = pq.read_table(path, columns=["row", column])
        keep = np.flatnonzero(np.isin(table.column("row").to_numpy(), rows))
        if len(keep):
            yield table.take(keep)


def thumbnails_for(spool: Path, rows: np.ndarray) -> dict[int, bytes]:
    """Thumbnail bytes of spool `rows`, by row."""
    out = {}
    for table in _spool_rows(spool, rows, "thumbnail"):
        out.update(zip(table.column("row").to_pylist(), table.column("thumbnail").to_pylist()))
    return out


def descriptors_for(spool: Path, rows: np.ndarray) -> np.ndarray:
    """(N, V, D) descriptors of `rows`, in the order of `rows` (which is ascending)."""
    parts = []
    for table in _spool_rows(spool, rows, "descriptor"):
        views = table.column("descriptor").combine_chunks()  # fixed-size lists of V views of D floats
        parts.append(views.flatten().flatten().to_numpy().reshape(table.num_rows, views.type.list_size, -1))
    return np.concatenate(parts)


# ---------------------------------------------------------------- stage 3: write
def split_of(group_ids: list[str], config: PrepareConfig) -> list[str]:
    """train/val/test from a hash of the group, so one catalog never sits on both sides."""
    out = []
    for group in group_ids:
        digest = hashlib.blake2b(f"{config.split_salt}:{group}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        out.append("test" if u < config.test_fraction else "val" if u < config.test_fraction + config.val_fraction else "train")
    return out


def _write_outputs(spool: Path, building: Path, config: PrepareConfig, decisions: dict, weak: dict,
                   group_rows: list) -> tuple[int, dict[str, int]]:
    files = sorted(spool.glob("batch-*.parquet"))
    names = pq.read_schema(files[0]).names
    attributes = [n for n in names if n.startswith("attr_")]
    schema = store.product_schema(attributes)
    writer = store.ShardWriter(building, schema, config.shard_rows)
    rejected_writer = pq.ParquetWriter(building / store.REJECTED, store.REJECTED_SCHEMA, compression="zstd")
    accepted, rejected = 0, {}
    with progress_bar("writing shards", len(files)) as advance:
        for path in files:
            table = pq.read_table(path)
            rows = table.column("row").to_pylist()
            reason = table.column("reject_reason").to_pylist()
            detail = table.column("reject_detail").to_pylist()
            for k, row in enumerate(rows):
                if reason[k] is None and row in decisions:
                    reason[k], detail[k] = decisions[row]
            keep = np.array([r is None for r in reason], dtype=bool)
            dropped = [(table.column("product_id")[k].as_py(), rows[k], reason[k], detail[k])
                       for k in np.flatnonzero(~keep).tolist()]
            for _, _, why, _ in dropped:
                rejected[why] = rejected.get(why, 0) + 1
            if dropped:
                rejected_writer.write_table(pa.Table.from_pylist(
                    [dict(zip(store.REJECTED_SCHEMA.names, d)) for d in dropped], store.REJECTED_SCHEMA))
            kept = table.filter(pa.array(keep))
            if kept.num_rows:
                writer.write(product_table(kept, weak, schema, config))
                accepted += kept.num_rows
            advance()
    writer.close()
    rejected_writer.close()
    pq.write_table(pa.Table.from_pylist([dict(zip(store.DUPLICATE_GROUPS_SCHEMA.names, g)) for g in group_rows],
                                        store.DUPLICATE_GROUPS_SCHEMA), building / store.DUPLICATE_GROUPS)
    return accepted, rejected


def product_table(kept: pa.Table, weak: dict, schema: pa.Schema, config: PrepareConfig) -> pa.Table:
    n = kept.num_rows
    column = lambda name: kept.column(name) if name in kept.column_names else pa.nulls(n, schema.field(name).type)
    catalog = column("catalog_id").to_pylist()
    rows = kept.column("row").to_pylist()
    catalog = [c if c is not None else weak.get(r) for c, r in zip(catalog, rows)]
    product_ids = kept.column("product_id").to_pylist()
    groups = [c if c is not None else p for c, p in zip(catalog, product_ids)]
    data = {field.name: column(field.name) for field in schema}
    data.update(catalog_id=pa.array(catalog, pa.string()), group_id=pa.array(groups, pa.string()),
                price=kept.column("price_value"), image_path=kept.column("image"),
                split=pa.array(split_of(groups, config), pa.string()))
    return pa.table([data[f.name] for f in schema], schema=schema)


# ---------------------------------------------------------------- the command
ENGINES = ("local", "spark")


def _fingerprint(files: list[Path], mapping: ColumnMapping, config: PrepareConfig) -> str:
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    # One file keeps the payload it always had, so a DATA_DIR prepared before folders were read stays reused.
    inputs = list(stats[0]) if len(stats) == 1 else [list(s) for s in stats]
    payload = json.dumps([*inputs, mapping.__dict__, config.to_dict()], sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()


def _build_locally(catalog: Path, building: Path, mapping: ColumnMapping,
                   config: PrepareConfig) -> tuple[int, int, dict[str, int], dict, list[float]]:
    """The three stages in this process and its pool: (input rows, accepted, rejected by reason, the report's
    figures of the duplicate groups, the end time of each stage)."""
    batches = read_catalog(catalog, mapping, config.batch_rows)
    input_rows = _run_per_row_stage(batches, catalog.parent.resolve(), config, building / SPOOL)
    if input_rows == 0:
        raise EclipError(f"{catalog}: the catalogue has a header but no products")
    stage_ends = [time.perf_counter()]
    decisions, weak, group_rows, group_figures = _global_decisions(building / SPOOL, config)
    stage_ends.append(time.perf_counter())
    accepted, rejected = _write_outputs(building / SPOOL, building, config, decisions, weak, group_rows)
    shutil.rmtree(building / SPOOL)
    stage_ends.append(time.perf_counter())
    return input_rows, accepted, rejected, {"duplicate_groups": len({g[0] for g in group_rows}), **group_figures}, \
        stage_ends


def prepare(catalog: str | Path, out: str | Path, mapping: ColumnMapping | None = None,
            config: PrepareConfig | None = None, force: bool = False, engine: str = "local",
            spark_master: str | None = None, spark_conf: list[tuple[str, str]] = ()) -> dict:
    """Run the whole pipeline; returns the report (also written to OUT/report.json).

    engine "spark" runs the stages on Spark (`eclip.data.spark`) and also reads a folder or glob of part files;
    both engines give the same DATA_DIR, so a finished one is reused whichever engine built it."""
    catalog, out = Path(catalog), Path(out)
    mapping, config = mapping or ColumnMapping(), config or PrepareConfig()
    validate(config)
    if engine not in ENGINES:
        raise EclipError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}")
    if engine == "spark":
        from eclip.data.spark import build_on_spark, catalog_files, require_pyspark

        require_pyspark()
        files, root = catalog_files(catalog)
    elif catalog.is_dir() or not catalog.exists() and any(c in str(catalog) for c in "*?["):
        raise EclipError(f"{catalog}: a folder or glob of part files is read by --engine spark only; "
                         "give one catalogue file, or add --engine spark")
    elif not catalog.is_file():
        raise EclipError(f"{catalog}: no such catalogue file")
    else:
        files = [catalog]
    fingerprint = _fingerprint(files, mapping, config)
    previous = store.prepared_report(out)
    if not force and previous is not None and previous["fingerprint"] == fingerprint:
        if not (out / store.CATALOG_DB).is_file():
            store.write_catalog_db(out)
        return previous
    check_out_folder(out, store.PREPARED_ENTRIES, "prepare", lambda folder: store.prepared_report(folder) is not None)
    started = time.perf_counter()
    building = building_folder(out)
    try:
        if engine == "spark":
            built = build_on_spark(files, root, building, mapping, config, spark_master, list(spark_conf))
        else:
            built = _build_locally(catalog, building, mapping, config)
        input_rows, accepted, rejected, group_figures, stage_ends = built
        if accepted + sum(rejected.values()) != input_rows:
            raise RuntimeError(f"row accounting broke: {input_rows} in, {accepted} accepted, {rejected} rejected")
        splits = {}
        for shard in sorted((building / store.SHARDS).glob("part-*.parquet")):
            for name, count in zip(*np.unique(pq.read_table(shard, columns=["split"]).column("split").to_numpy(zero_copy_only=False), return_counts=True)):
                splits[str(name)] = splits.get(str(name), 0) + int(count)
        report = {
            "catalog": str(catalog.resolve()), "input_rows": input_rows, "accepted": accepted,
            "rejected": dict(sorted(rejected.items())), **group_figures,
            "splits": splits, "seconds": round(time.perf_counter() - started, 3),
            "stage_seconds": {name: round(end - start, 3) for name, start, end in
                              zip(("rows", "decisions", "write"), [started, *stage_ends], stage_ends)},
            "options": config.to_dict(), "mapping": {k: v for k, v in mapping.__dict__.items()},
            "engine": engine, "fingerprint": fingerprint,
        }
        text = json.dumps(report, indent=2, default=list)
        report = json.loads(text)  # the caller sees exactly what a later run reads back
        (building / store.REPORT).write_text(text)
        publish_folder(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    store.write_catalog_db(out)
    return report
