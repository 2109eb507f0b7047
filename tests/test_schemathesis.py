"""Schemathesis against ``/openapi.json`` of a live server: for every documented operation,
requests generated from the description, valid ones and invalid ones, never get a 5xx, and every
answer conforms to the description (a documented status, content type, headers and body).

One test per operation and generation mode, each bounded in examples, so the whole run stays
well under a minute. (Schemathesis' own ``from_fixture`` loader does not run under pytest 9,
so the test drives each operation's strategy with Hypothesis directly.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from commons_session.http.openapi import openapi_document

from .conftest import Server, start_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
DOCUMENT = openapi_document()


def _constrained(media: dict[str, Any]) -> bool:
    """A body schema that invalid data can violate: one with properties or required keys."""
    schema = media.get("schema", {})
    if "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return bool(schema.get("properties") or schema.get("required") or schema.get("allOf"))


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether Schemathesis can make a request that breaks the description: an operation with
    nothing but a free-form path string or an unconstrained form has no invalid input."""
    if operation.get("security") or any(p["in"] != "path" for p in operation.get("parameters", [])):
        return True
    content = operation.get("requestBody", {}).get("content", {})
    return any(
        media_type == "application/json" or _constrained(media) for media_type, media in content.items()
    )


# Every documented operation, named as Schemathesis names them ("POST /api/sessions"), except
# the description itself, which Schemathesis leaves out of what it tests; with invalid input
# too where there is such a thing.
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if path != "/openapi.json"
]
CASES = [
    pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if path != "/openapi.json"
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _negatable(operation)
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: generated requests never touch the shared database."""
    srv = start_server(tmp_path_factory.mktemp("schemathesis"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(live: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


def test_the_served_description_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    results = list(api_schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the served description has operations that do not load"
    assert {f"{op.method.upper()} {op.path}" for op in operations} == set(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema, live: Server, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    session = httpx.Client(timeout=10)

    @settings(
        max_examples=10,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=live.url, checks=CHECKS)

    with session:
        run()
