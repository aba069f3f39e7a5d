"""`eclip embed --engine spark`: one Spark task per DATA_DIR shard, each loading the model from RUN_DIR once and
embedding its shard with one torch thread into the same part file the local engine writes (`parts.embed_shard`).
RUN_DIR, DATA_DIR and the EMB_DIR's building folder must be paths every executor reads (and, for the parts,
writes) alike: a local run, or a shared filesystem on a cluster. The index is then built on the driver from the
parts (`build.build_from_parts`)."""

from __future__ import annotations

from pathlib import Path

APP_NAME = "eclip embed"


def embed_on_spark(run_dir: Path, shards: list[Path], parts: Path, batch_size: int, force: bool,
                   master: str | None) -> int:
    """Embed `shards` into `parts` on Spark -> how many parts were (re-)embedded."""
    from eclip.data.spark import require_pyspark

    require_pyspark()
    from eclip.data.spark.session import spark_errors, spark_session

    if not shards:
        return 0
    spark, started = spark_session(master, [("spark.ui.showConsoleProgress", "false")], 2, APP_NAME)
    try:
        with spark_errors("embedding the shards"):
            tasks = spark.sparkContext.parallelize([str(shard) for shard in shards], len(shards))
            run, out = str(Path(run_dir).resolve()), str(Path(parts).resolve())
            done = tasks.mapPartitions(lambda names: _embed_task(run, out, list(names), batch_size, force)).collect()
    finally:
        if started:
            spark.stop()
    return sum(done)


def _embed_task(run_dir: str, parts: str, shards: list[str], batch_size: int, force: bool):
    """On an executor: the model loaded once for this task's shards -> one 0/1 per shard (embedded or kept)."""
    import torch

    from eclip.index.parts import embed_shard, part_provenance
    from eclip.models import load_model

    torch.set_num_threads(1)  # one task per core: more threads would fight over it
    model, _, _ = load_model(Path(run_dir))
    for shard in map(Path, shards):
        yield int(embed_shard(model, shard, Path(parts) / shard.name, part_provenance(shard, Path(run_dir)),
                              batch_size, force=force))
