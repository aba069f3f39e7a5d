"""The three stages of `prepare` on Spark, into the building folder `prepare` publishes (see `__init__.py`).

The building folder, the spool in it and the catalogue files must be at the same path for the driver and every
executor (one machine, or a shared filesystem): executors write the spool and the shards there, the driver
reads the spool's descriptors and writes report.json and catalog.duckdb.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from eclip.data.catalog import ColumnMapping
from eclip.data.config import PrepareConfig
from eclip.data.prepare import SPOOL
from eclip.data.spark.decisions import decide
from eclip.data.spark.rows import run_per_row_stage
from eclip.data.spark.session import spark_errors, spark_session
from eclip.data.spark.source import read_catalog_frame
from eclip.data.spark.write import write_outputs
from eclip.errors import EclipError


def build(files: list[Path], root: Path, building: Path, mapping: ColumnMapping, config: PrepareConfig,
          master: str | None, conf: list[tuple[str, str]]) -> tuple[int, int, dict[str, int], dict, list[float]]:
    """(input rows, accepted, rejected by reason, the report's figures of the duplicate groups, the end time of
    each stage), as `prepare._build_locally` returns them."""
    spark, started = spark_session(master, conf, config.worker_count())
    spool = building / SPOOL
    try:
        with spark_errors(f"reading {files[0] if len(files) == 1 else root}"):
            frame, schema, input_rows = read_catalog_frame(spark, files, mapping, config.batch_rows)
        if input_rows == 0:
            where = files[0] if len(files) == 1 else f"{root} ({len(files)} files)"
            raise EclipError(f"{where}: the catalogue has a header but no products")
        with spark_errors("checking rows (stage 1)"):
            run_per_row_stage(frame, schema, input_rows, root, config, spool)
        stage_ends = [time.perf_counter()]
        with spark_errors("deciding duplicates (stage 2)"):
            decisions, groups, group_figures = decide(spark, spool, config)
            group_figures = {"duplicate_groups": groups.select("group_id").distinct().count(), **group_figures}
        stage_ends.append(time.perf_counter())
        with spark_errors(f"writing {building}"):
            accepted, rejected = write_outputs(spark, spool, building, config, decisions, groups)
        shutil.rmtree(spool)
        stage_ends.append(time.perf_counter())
        return input_rows, accepted, rejected, group_figures, stage_ends
    finally:
        if started:
            spark.stop()
