"""The Spark session `prepare --engine spark` (and `embed --engine spark`) runs on, and Spark's errors as one-line `EclipError`s."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from eclip.errors import EclipError

APP_NAME = "eclip prepare"
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
_ECLIP_ERROR = re.compile(r"eclip\.errors\.EclipError: (.+)")


def spark_session(master: str | None, conf: list[tuple[str, str]], workers: int,
                  app_name: str = APP_NAME) -> tuple[SparkSession, bool]:
    """The session to run on, and whether this call started it (then the caller stops it when done).

    master None is `local[workers]`. A session already running in this process (a notebook's, the tests') is
    used as it is: Spark fixes master and static settings when it starts."""
    # Under spark-submit the master and the settings are spark-submit's (its JVM is already up): add none.
    submitted = master is None and "PYSPARK_GATEWAY_PORT" in os.environ
    master = master or f"local[{workers}]"
    local = master.startswith("local") and not submitted
    # Executors start this very interpreter (the venv with eclip in it) unless the user names another one
    # (PYSPARK_PYTHON or spark.pyspark.python, e.g. a packed environment on a cluster).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if local:  # a laptop's hostname may not resolve, and a local run has no business on the network
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings = {"spark.sql.execution.arrow.pyspark.enabled": "true"}
    if local:  # 200 shuffle partitions are for clusters; adaptive execution still merges small ones
        settings["spark.sql.shuffle.partitions"] = str(max(4, 2 * workers))
    keys = {key for key, _ in conf}
    if "spark.driver.extraJavaOptions" not in keys:
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    settings.update(conf)
    started = SparkSession.getActiveSession() is None
    builder = SparkSession.builder.appName(app_name)
    if not submitted:
        builder = builder.master(master)
    else:
        settings.pop("spark.driver.extraJavaOptions", None)
    for key, value in settings.items():
        builder = builder.config(key, value)
    with spark_errors("starting Spark" if submitted else f"starting Spark (--spark-master {master})"):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, started


@contextmanager
def spark_errors(doing: str):
    """Turn an exception from Spark (the JVM through Py4J, an analysis error, a failed Python task) into one
    `EclipError` line: a task's own `EclipError` (a bad catalogue file, found where the file is read) keeps its
    message as the local engine words it; anything else says what was being done and the first line of the cause."""
    try:
        yield
    except (PySparkException, Py4JError) as error:
        text = str(error)
        found = _ECLIP_ERROR.findall(text)
        if found:
            raise EclipError(found[-1].strip()) from None
        raise EclipError(f"Spark failed while {doing}: {_first_line(error)}; check --spark-master, --spark-conf "
                         "and the executors' logs") from None


def _first_line(error: Exception) -> str:
    java = getattr(error, "java_exception", None)
    text = str(java.toString()) if java is not None else str(error)
    if "Traceback (most recent call last)" in text:  # a Python task failed: its exception is the last line
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
        text = lines[-1] if lines else text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    hint = ""
    if "JAVA_GATEWAY_EXITED" in text or "Java gateway process exited" in text:
        hint = "; Spark needs Java 17 or 21 (set JAVA_HOME), and a valid --spark-master and --spark-conf"
    return (line if len(line) <= 400 else line[:400] + "...") + hint
