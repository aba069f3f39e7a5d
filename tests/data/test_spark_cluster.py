"""`eclip prepare --engine spark` on a real standalone Spark cluster: a master and a worker started on 127.0.0.1
from pyspark's own `spark-class`, so the tasks' functions, the options and the near-duplicate model travel to
another JVM and its Python workers. The CLI runs in a subprocess (a process holding the tests' local session
cannot join another master); everything started here is stopped, also when the test fails."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import eclip
from eclip.data import store
from eclip.data.config import PrepareConfig
from eclip.data.prepare import prepare

pyspark = pytest.importorskip("pyspark")

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
CODE_ROOT = Path(eclip.__file__).resolve().parents[1]  # the executors import the eclip these tests import
CLI = "import sys; from eclip.cli import main; sys.exit(main())"


def _environment(folder: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "SPARK_HOME": str(SPARK_CLASS.parents[1]), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONPATH": path, "PYSPARK_PYTHON": sys.executable, "SPARK_WORKER_DIR": str(folder / "work"),
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}  # the REST server's fixed port 6066


def _wait_for(log: Path, pattern: str, process: subprocess.Popen, seconds: float = 180) -> re.Match:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {log} (exit {process.poll()}):\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """The daemon and what it started (the worker's executors and their Python workers share its group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _running(group: int) -> list[int]:
    """The live processes of a process group (zombies, dead but not yet reaped by their parent, do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp
        except OSError:  # the process ended while being read
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@contextmanager
def standalone_cluster(folder: Path, groups: list[int]):
    """A master (ports chosen by the system) and one 2-core worker on 127.0.0.1; yields the master URL. `groups`
    gets the process group of each daemon (its JVM and all it starts)."""
    env, started = _environment(folder), []

    def daemon(name: str, *arguments: str) -> tuple[subprocess.Popen, Path]:
        log = folder / f"{name}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen([str(SPARK_CLASS), f"org.apache.spark.deploy.{name}", *arguments],
                                       stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started.append(process)
        groups.append(process.pid)
        return process, log

    try:
        master, log = daemon("master.Master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0")
        url = _wait_for(log, r"Starting Spark master at (spark://127\.0\.0\.1:\d+)", master)[1]
        worker, log = daemon("worker.Worker", url, "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
                             "--cores", "2", "--memory", "2g", "--work-dir", str(folder / "work"))
        _wait_for(log, "Successfully registered with master", worker)
        yield url
    finally:
        for process in reversed(started):
            _stop(process)


@pytest.fixture(scope="module")
def mixed_table(tmp_path_factory, fashion_dir) -> tuple[Path, Path]:
    """24 real fashion-dev listings as a folder of two part files, the first a Parquet table with the images as
    bytes (a column named image_bytes), the second a CSV naming image files; and the same rows as one CSV naming
    files, for the local engine. One listing repeats another's photo, one has bytes that are not an image."""
    folder = tmp_path_factory.mktemp("cluster")
    rows = list(csv.DictReader(open(fashion_dir / "catalog.csv", encoding="utf-8")))[100:124]
    rows[5]["image"] = rows[2]["image"]
    images = {r["product_id"]: (fashion_dir / r["image"]).read_bytes() for r in rows}
    images[rows[9]["product_id"]] = b"GIF89a but nothing after it"
    (folder / "table" / "images").mkdir(parents=True)
    (folder / "single" / "images").mkdir(parents=True)
    for product_id, data in images.items():
        (folder / "single" / "images" / f"{product_id}.jpg").write_bytes(data)
    fields = ["product_id", "title", "image", "category", "attr_color"]
    listed = [{**{k: r[k] for k in fields}, "image": f"images/{r['product_id']}.jpg"} for r in rows]
    in_bytes = pa.Table.from_pylist([{k: r[k] for k in fields if k != "image"} for r in listed[:12]])
    in_bytes = in_bytes.append_column("image_bytes", pa.array([images[r["product_id"]] for r in listed[:12]],
                                                                pa.binary()))
    pq.write_table(in_bytes, folder / "table" / "part-00000.parquet")
    for r in listed[12:]:
        (folder / "table" / "images" / f"{r['product_id']}.jpg").write_bytes(images[r["product_id"]])
    for path, part in ((folder / "table" / "part-00001.csv", listed[12:]), (folder / "single" / "catalog.csv", listed)):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(part)
    return folder / "table", folder / "single" / "catalog.csv"


@pytest.mark.slow
def test_prepare_on_a_standalone_cluster_gives_the_local_data_dir(mixed_table, tmp_path, run_dir):
    table, single = mixed_table
    options = ["--workers", "1", "--dedup", "title,image_hash", "--near-duplicate-model", str(run_dir)]
    local = prepare(single, tmp_path / "local",
                    config=PrepareConfig(workers=1, dedup="title,image_hash", near_duplicate_model=str(run_dir)))
    assert local["rejected"] == {"duplicate_image_hash": 1, "image_unreadable": 1}
    groups: list[int] = []
    with standalone_cluster(tmp_path, groups) as url:
        finished = subprocess.run(
            [sys.executable, "-c", CLI, "prepare", str(table), "--out", str(tmp_path / "cluster"), *options,
             "--engine", "spark", "--spark-master", url, "--spark-conf", "spark.executor.memory=1g",
             "--spark-conf", "spark.sql.shuffle.partitions=4", "--spark-conf", "spark.ui.enabled=false",
             "--spark-conf", "spark.ui.showConsoleProgress=false"],
            env=_environment(tmp_path), capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stderr[-3000:]
    executor_logs = list((tmp_path / "work").glob("app-*/*/stderr"))  # tasks ran in the worker's executor
    assert executor_logs and "Finished task" in executor_logs[0].read_text()
    assert len(groups) == 2 and not any(_running(group) for group in groups)  # master, worker, executors stopped

    cluster = store.prepared_report(tmp_path / "cluster")
    assert cluster["engine"] == "spark"
    for key in ("input_rows", "accepted", "rejected", "duplicate_groups", "splits"):
        assert cluster[key] == local[key], key
    products = store.read_products(tmp_path / "cluster").sort_by("row").to_pylist()
    expected = store.read_products(tmp_path / "local").sort_by("row").to_pylist()
    assert [p["image_path"] for p in products] == [None if p["row"] <= 12 else p["image_path"] for p in expected]
    assert [{**p, "image_path": None} for p in products] == [{**p, "image_path": None} for p in expected]
    for name in (store.REJECTED, store.DUPLICATE_GROUPS):
        assert pq.read_table(tmp_path / "cluster" / name).sort_by("row") == \
            pq.read_table(tmp_path / "local" / name).sort_by("row"), name
