"""Property-based run of the JSON API against its own OpenAPI document (schemathesis, in-process ASGI, the real
PostgreSQL store): signed in, no operation answers 5xx; without credentials, every operation answers 401."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from entrypoints.web.app import create_app
from gpuops.pipeline import Pipeline
from tests.web_server import PASSWORDS, ResumeRecorder, seed_awaiting, web_container

pytestmark = pytest.mark.postgres
ADMIN = {"Authorization": "Basic " + base64.b64encode(f"adam:{PASSWORDS['adam']}".encode()).decode()}
BOUNDED = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture
def api_schema(postgres_url: str) -> Iterator[Any]:
    container = web_container(postgres_url)
    seed_awaiting(container)
    seed_awaiting(container, host="gpu-node-004", plan_hash="e" * 64)
    app = create_app(container, pipeline=Pipeline(container, ResumeRecorder([])))
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    try:
        yield schema
    finally:
        container.close()


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 9, "the API document lost operations"
    return found


def test_signed_in_no_operation_answers_a_server_error(api_schema: Any) -> None:
    seen: set[tuple[str, int]] = set()
    for operation in operations(api_schema):
        @given(case=operation.as_strategy())
        @BOUNDED
        def check(case: Any) -> None:
            response = case.call(headers=ADMIN)
            seen.add((f"{case.method} {case.operation.path}", response.status_code))
            assert response.status_code < 500, (f"{case.method} {case.formatted_path}: {response.status_code} "
                                                f"{response.text}")

        check()
    answered = {label for label, status in seen if status == 200}
    assert "GET /api/incidents" in answered and "GET /api/fleet" in answered, seen


def test_without_credentials_every_operation_answers_401(api_schema: Any) -> None:
    for operation in operations(api_schema):
        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            if case.headers:
                case.headers = {k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "cookie")}
            response = case.call()
            assert response.status_code == 401, f"{case.method} {case.formatted_path}: {response.status_code}"

        check()
