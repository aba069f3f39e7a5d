"""The one Spark session (local[2]) of the data tests that run on Spark."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    from eclip.data.spark.session import spark_session

    session, started = spark_session(None, [("spark.ui.enabled", "false"),
                                            ("spark.ui.showConsoleProgress", "false")], 2)
    yield session
    if started:
        session.stop()
