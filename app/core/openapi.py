"""The OpenAPI schema: problem+json errors, readable operation ids, 401 on secured routes."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.core.errors import PROBLEM_JSON, AppError, InvalidToken, NotAuthenticated, ValidationFailed

PROBLEM_REF = "#/components/schemas/Problem"


class ProblemFieldError(BaseModel):
    field: str = Field(description="Dotted path of the invalid input.", examples=["body.items.0"])
    message: str = Field(description="Why it is invalid.", examples=["Input should be >= 1"])


class Problem(BaseModel):
    """An RFC 9457 problem details body; `code` is stable and meant for clients to switch on."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(description="The HTTP status phrase.", examples=["Conflict"])
    status: int = Field(description="The HTTP status code.", examples=[409])
    detail: str = Field(description="A human-readable explanation.", examples=["Sold out."])
    code: str = Field(description="A stable snake_case error code.", examples=["sold_out"])
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="One entry per invalid field (`validation_error` only)."
    )


def _example(status: int, code: str, detail: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if code == "validation_error":
        value["errors"] = [{"field": "body.field", "message": "Field required"}]
    return {"summary": code, "value": value}


def _describe(status: int, codes: Iterable[str]) -> str:
    return HTTPStatus(status).phrase + ": " + ", ".join(f"`{c}`" for c in codes)


def _problem_response(status: int, examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": _describe(status, examples),
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}, "examples": examples}},
    }


def problem_responses(*error_classes: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """A `responses=` dict documenting each error class as problem+json, grouped by status.

    `@router.post(..., responses=problem_responses(NotFound, SoldOut))`; 401 on routes
    that take a bearer token and 422 on routes with input are documented automatically.
    """
    by_status: dict[int, dict[str, Any]] = {}
    for cls in error_classes:
        by_status.setdefault(cls.status, {})[cls.code] = _example(cls.status, cls.code, cls.detail)
    return {status: _problem_response(status, ex) for status, ex in sorted(by_status.items())}


def _merge_problem(responses: dict[str, Any], status: int, examples: dict[str, Any]) -> None:
    """Add problem+json examples to an operation's response, keeping what is documented."""
    existing = responses.get(str(status))
    content = (existing or {}).get("content", {}).get(PROBLEM_JSON)
    if content is None:
        responses[str(status)] = _problem_response(status, examples)
        return
    merged = {**examples, **content.get("examples", {})}
    content["examples"] = merged
    existing["description"] = _describe(status, merged)


_AUTH_EXAMPLES = {
    cls.code: _example(cls.status, cls.code, cls.detail) for cls in (NotAuthenticated, InvalidToken)
}
_VALIDATION_EXAMPLES = {
    ValidationFailed.code: _example(422, ValidationFailed.code, "body.field: Field required")
}


def _bearer_schemes(schema: dict[str, Any]) -> set[str]:
    schemes = schema.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    }


def _has_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _readable_operation_ids(app: FastAPI) -> dict[tuple[str, str], str]:
    """`list_events` rather than `list_events_api_events_get`; a route's own id wins.

    One function serving several methods (PUT and PATCH) gets the method appended.
    """
    names: dict[tuple[str, str], str] = {}
    count: dict[str, int] = {}
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            name = route.operation_id or route.name
            names[(route.path_format, method.lower())] = name
            count[name] = count.get(name, 0) + 1
    return {key: (f"{name}_{key[1]}" if count[name] > 1 else name) for key, name in names.items()}


def postprocess_schema(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Problem schema everywhere an error is documented, 401 on secured operations."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["ProblemFieldError"] = ProblemFieldError.model_json_schema()
    bearer = _bearer_schemes(schema)
    operation_ids = _readable_operation_ids(app)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if (path, method) in operation_ids:
                operation["operationId"] = operation_ids[(path, method)]
            default_422 = responses.get("422", {}).get("content", {}).get("application/json")
            if default_422 and "HTTPValidationError" in str(default_422.get("schema")):
                del responses["422"]
            if _has_input(operation):
                _merge_problem(responses, 422, _VALIDATION_EXAMPLES)
            secured = any(set(req) & bearer for req in operation.get("security", []))
            if secured:
                _merge_problem(responses, 401, _AUTH_EXAMPLES)
            operation["responses"] = dict(sorted(responses.items()))
    for name in ("HTTPValidationError", "ValidationError"):
        if name not in str(schema.get("paths")):
            components.pop(name, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Generate the schema once, post-processed (see postprocess_schema)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # Duplicate default ids are replaced by readable unique ones below.
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            app.openapi_schema = postprocess_schema(app, schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
