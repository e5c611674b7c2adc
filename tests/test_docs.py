"""The OpenAPI schema and the offline Swagger UI / ReDoc pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from app.core.errors import PROBLEM_JSON, NotFound, PermissionDenied, SoldOut
from app.core.openapi import documented_path, problem_responses, route_contexts

CDN = re.compile(r"cdn\.|unpkg|jsdelivr|googleapis|cloudflare", re.IGNORECASE)
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
# Probes answer 200 or 503; they have no client error to document.
NO_CLIENT_ERRORS = {"health"}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/schema")
    assert r.status_code == 200
    return r.json()


PROBLEM_REFS = {"#/components/schemas/Problem", "#/components/schemas/ValidationProblem"}


def problem_ref(schema: dict[str, Any]) -> str:
    """The Problem component an error schema narrows (`allOf: [{$ref}, {code enum}]`)."""
    first = schema["oneOf"][0] if "oneOf" in schema else schema
    return first["allOf"][0]["$ref"]


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_schema_is_valid_openapi_3_1(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.1")
    validate(schema)


def test_every_route_is_documented(app: FastAPI, schema: dict[str, Any]) -> None:
    routes = [
        context
        for context in route_contexts(app)
        if isinstance(getattr(context, "original_route", context), APIRoute)
        and context.include_in_schema
    ]
    assert len(routes) > 2
    for route in routes:
        path = documented_path(route.path_format)
        assert path in schema["paths"], path
        for method in route.methods:
            assert method.lower() in schema["paths"][path], (method, route.path)


def test_operation_ids_are_unique_and_readable(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        # Not FastAPI's default `name_path_method` form.
        assert not re.search(r"_(api|health)_.*_(get|post|put|patch|delete)$", operation_id)


def test_every_operation_has_summary_tag_and_problem_errors(schema: dict[str, Any]) -> None:
    for path, method, op in operations(schema):
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        assert op.get("tags"), where
        if set(op["tags"]) & NO_CLIENT_ERRORS:
            continue
        client_errors = {s: r for s, r in op["responses"].items() if s.startswith("4")}
        assert client_errors, f"{where} documents no 4xx response"
        for status, response in client_errors.items():
            content = response.get("content", {})
            assert PROBLEM_JSON in content, f"{where} {status} is not problem+json"
            assert problem_ref(content[PROBLEM_JSON]["schema"]) in PROBLEM_REFS, f"{where} {status}"
            assert "application/json" not in content, f"{where} {status}"


def test_validation_errors_use_the_problem_schema(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "code"}
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    for path, method, op in operations(schema):
        if op.get("parameters") or op.get("requestBody"):
            response = op["responses"].get("422")
            assert response, f"{method.upper()} {path} documents no 422"
            examples = response["content"][PROBLEM_JSON]["examples"]
            assert "validation_error" in examples


def test_secured_operations_document_401(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    secured = [(p, m, op) for p, m, op in operations(schema) if op.get("security")]
    for path, method, op in secured:
        response = op["responses"].get("401")
        assert response, f"{method.upper()} {path}"
        examples = response["content"][PROBLEM_JSON]["examples"]
        if op["security"] == [{"HTTPBearer": []}]:
            assert {"not_authenticated", "invalid_token"} <= set(examples)
        else:  # anonymous allowed: a token that is sent is checked
            assert op["security"] == [{}, {"HTTPBearer": []}]
            assert "invalid_token" in examples


def test_problem_responses_groups_codes_by_status() -> None:
    responses = problem_responses(NotFound, PermissionDenied, SoldOut)
    assert sorted(responses) == [403, 404, 409]
    conflict = responses[409]
    assert "`sold_out`" in conflict["description"]
    body = conflict["content"][PROBLEM_JSON]
    assert problem_ref(body["schema"]) == "#/components/schemas/Problem"
    assert body["schema"]["allOf"][1]["properties"]["code"]["enum"] == ["sold_out"]
    assert body["examples"]["sold_out"]["value"]["status"] == 409


async def test_docs_pages_use_local_assets_only(client: httpx.AsyncClient) -> None:
    for page, asset in (
        ("/api/docs/swagger", "swagger-ui-bundle.js"),
        ("/api/docs/redoc/", "redoc.standalone.js"),
    ):
        r = await client.get(page)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert not CDN.search(r.text), CDN.search(r.text)
        assert f"/api/docs/assets/{asset}" in r.text
        assert "/api/schema" in r.text
        # The browser may only load what the service serves.
        assert "default-src 'self'" in r.headers["content-security-policy"]
        js = await client.get(f"/api/docs/assets/{asset}")
        assert js.status_code == 200 and len(js.content) > 100_000


async def test_swagger_does_not_keep_the_token_in_local_storage(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/api/docs/swagger")
    assert '"persistAuthorization": false' in r.text
