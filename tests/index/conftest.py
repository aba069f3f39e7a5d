"""The index tests' inputs: the shared `prepared_fashion` products cut into several shards, and a realistic
EMB_DIR large enough for IVF-PQ (real fashion-dev vectors of the shared `run_dir` model plus noisy copies of
them), written in parts the way `eclip embed` writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SHARD_ROWS = 120


def resharded(data_dir: Path, out: Path, rows: int) -> Path:
    """A copy of DATA_DIR whose products are cut into shards of `rows` rows, same order."""
    shutil.copytree(data_dir, out)
    shards = sorted((out / "shards").glob("part-*.parquet"))
    table = pa.concat_tables(pq.read_table(path) for path in shards)
    for path in shards:
        path.unlink()
    for number, start in enumerate(range(0, table.num_rows, rows)):
        pq.write_table(table.slice(start, rows), out / "shards" / f"part-{number:05d}.parquet")
    return out


@pytest.fixture(scope="session")
def sharded_fashion(prepared_fashion, tmp_path_factory) -> Path:
    """prepared_fashion (475 products) in shards of 120: 120, 120, 120, 115."""
    return resharded(prepared_fashion, tmp_path_factory.mktemp("sharded") / "data", SHARD_ROWS)


@pytest.fixture(scope="session")
def local_emb(run_dir, sharded_fashion, tmp_path_factory) -> Path:
    from eclip.index.embed import embed_command

    out = tmp_path_factory.mktemp("local_emb") / "emb"
    embed_command(run_dir, sharded_fashion, out, batch_size=50)
    return out


@pytest.fixture(scope="session")
def large_parts(local_emb, tmp_path_factory) -> Path:
    """An embeddings folder of 20,000 rows in 4 parts: the real vectors and noisy neighbours of them (a catalogue's
    near-duplicates and variants), each row with its source's category and title."""
    from eclip.index.vectors import normalize_rows, read_embeddings, write_embeddings

    table, vectors = read_embeddings(local_emb)
    rng = np.random.default_rng(0)
    count, dim = 20_000, vectors["fused"].shape[1]
    origin = rng.integers(0, table.num_rows, count)
    folder = tmp_path_factory.mktemp("large") / "emb"
    for number, rows in enumerate(np.array_split(np.arange(count), 4)):
        matrices = {view: normalize_rows(vectors[view][origin[rows]] + 0.3 / np.sqrt(dim) *
                                         rng.standard_normal((len(rows), dim)).astype(np.float32))
                    for view in vectors}
        columns = {name: table.column(name).take(pa.array(origin[rows])) for name in ("split", "category", "title")}
        write_embeddings(folder / "embeddings.parquet" / f"part-{number:05d}.parquet",
                         [f"p{row}" for row in rows], matrices, columns)
    (folder / "meta.json").write_text(json.dumps({"products": count, "dim": dim}))
    return folder
