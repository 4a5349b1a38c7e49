"""Errors of the query API: the reproductions of issue 8 (each was a 5xx or a wrong answer) and a
property-based run of schemathesis against the API's own OpenAPI on the real services."""

from __future__ import annotations

import time

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pingan.api.models import ErrorBody
from pingan.settings import Settings
from tests.integration.test_api import running_api

pytestmark = pytest.mark.integration

# (path, the field the problem must name). Before: 503, 500, 500, and windows from 2026 for a 2163 range.
REPRODUCTIONS = [
    ("/v1/index/day?date=0230-06-29", "date"),
    ("/v1/index/month?date=9999-12-31", "date"),
    ("/v1/grids/{grid}/history?end=0001-01-01T00:00:00Z", "end"),
    ("/v1/grids/{grid}/history?start=2163-01-06T23:08:24Z&end=2163-01-08T23:08:24Z", "start"),
    ("/v1/index/week/flagged?date=1969-12-31", "date"),
    ("/v1/grids/{grid}/history?start=2105-12-31T00:00:00Z&end=2106-03-01T00:00:00Z", "start"),
]


@pytest.mark.parametrize(("path", "field"), REPRODUCTIONS)
async def test_out_of_range_times_are_a_clear_422_problem(settings: Settings, path: str, field: str) -> None:
    async with running_api(settings, api_cache_seconds=0) as api:
        response = await api.client.get(path.format(grid=api.registry.grids[0].grid_id))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = ErrorBody.model_validate(response.json())
    assert (problem.status, problem.code, problem.field, problem.type) == (
        422, "invalid_parameter", field, "urn:pingan:problem:invalid_parameter",
    )  # fmt: skip
    assert "2000-01-01" in problem.detail


# The query API: every GET but the endless SSE stream. 25 examples each keeps the run to seconds.
EXAMPLES_PER_OPERATION = 25


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(api: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    tested = []
    started = time.monotonic()
    with httpx.Client():  # the API is up (the fixture waited for /healthz)
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.method.upper() != "GET" or operation.path == "/v1/alerts/stream":
                continue

            @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                                 suppress_health_check=list(hypothesis.HealthCheck),
                                 phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])  # fmt: skip
            @hypothesis.given(case=operation.as_strategy())
            def conforms(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=api, checks=checks, timeout=10)

            conforms()
            tested.append(operation.path)
    assert {"/v1/grids/risk", "/v1/grids/{grid_id}/history", "/v1/index/{period}", "/v1/dead-letters"} <= set(tested)
    assert time.monotonic() - started < 90
