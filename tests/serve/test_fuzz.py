"""Schemathesis fuzzes every operation of the OpenAPI spec: whatever it sends, the service answers without a
server error, and every 4xx carries a JSON `detail`."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from eclip.serve.app import create_app
from eclip.serve.config import ServeConfig
from eclip.serve.engine import SearchEngine


@pytest.fixture(scope="module")
def api_schema(served, tmp_path_factory):
    run_dir, emb_dir, data_dir = served
    own = shutil.copytree(emb_dir, tmp_path_factory.mktemp("fuzz") / "emb")  # fuzzed adds and removals stay here
    engine = SearchEngine(run_dir, own, data_dir, ServeConfig(max_upload_bytes=100_000, max_pixels=1_000_000))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(engine))


def test_no_request_gets_a_server_error(api_schema):
    # Hypothesis drives each operation's strategy directly (schemathesis' pytest plugin does the same per test).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])
            if 400 <= response.status_code < 500:
                assert "detail" in response.json(), f"{operation.label}: {response.status_code} without a JSON detail"

        fuzz()
