"""The OpenAPI schema: problem+json errors, readable operation ids, 401 on secured routes."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any, NamedTuple

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


def _as_problem(response: dict[str, Any], displaced: set[str]) -> dict[str, Any]:
    """Make an error response problem+json with the Problem schema (the contract says every
    error is), whatever media type or schema a router declared; returns its content."""
    content = response.setdefault("content", {})
    problem = content.get(PROBLEM_JSON) or {}
    for media in [m for m in content if m != PROBLEM_JSON]:
        body = content.pop(media)
        ref = (body.get("schema") or {}).get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            displaced.add(ref.rsplit("/", 1)[1])
        for key in ("examples", "example"):
            if key in body and key not in problem:
                problem[key] = body[key]
    problem["schema"] = {"$ref": PROBLEM_REF}
    content[PROBLEM_JSON] = problem
    return problem


def _merge_problem(
    responses: dict[str, Any], status: int, examples: dict[str, Any], displaced: set[str]
) -> None:
    """Document codes on an operation's error response, keeping what the router wrote."""
    existing = responses.get(str(status))
    if existing is None:
        responses[str(status)] = _problem_response(status, examples)
        return
    problem = _as_problem(existing, displaced)
    problem["examples"] = {**examples, **problem.get("examples", {})}
    description = existing.get("description") or HTTPStatus(status).phrase
    missing = [f"`{code}`" for code in examples if f"`{code}`" not in description]
    if missing:
        description = f"{description} (also {', '.join(missing)})"
    existing["description"] = description


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


class ApiRoute(NamedTuple):
    path: str
    methods: frozenset[str]
    name: str
    operation_id: str | None


def iter_api_routes(app: FastAPI) -> Iterator[ApiRoute]:
    """Every documented FastAPI route with its full path, through included routers."""
    for context in route_contexts(app):
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute) and route.include_in_schema:
            yield ApiRoute(
                path=context.path_format,
                methods=frozenset(m.lower() for m in context.methods or ()),
                name=route.name,
                operation_id=route.operation_id,
            )


def route_contexts(app: FastAPI) -> list[Any]:
    """The app's routes, flattened: newer FastAPI nests included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI that copies included routes into app.routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _readable_operation_ids(app: FastAPI) -> dict[tuple[str, str], str]:
    """`list_events` rather than `list_events_api_events_get`; a route's own id wins.

    One function serving several methods (PUT and PATCH) gets the method appended.
    """
    names: dict[tuple[str, str], str] = {}
    count: dict[str, int] = {}
    for route in iter_api_routes(app):
        for method in route.methods:
            name = route.operation_id or route.name
            names[(route.path, method)] = name
            count[name] = count.get(name, 0) + 1
    return {key: (f"{name}_{key[1]}" if count[name] > 1 else name) for key, name in names.items()}


def postprocess_schema(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Problem schema everywhere an error is documented, 401 on secured operations."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Problem"].pop("$defs", None)
    components["ProblemFieldError"] = ProblemFieldError.model_json_schema()
    bearer = _bearer_schemes(schema)
    displaced: set[str] = set()
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
                displaced.update(("HTTPValidationError", "ValidationError"))
            for status, response in responses.items():
                if status[:1] in "45" and status.isdigit():
                    _as_problem(response, displaced)
            if _has_input(operation):
                _merge_problem(responses, 422, _VALIDATION_EXAMPLES, displaced)
            secured = any(set(req) & bearer for req in operation.get("security", []))
            if secured:
                _merge_problem(responses, 401, _AUTH_EXAMPLES, displaced)
            operation["responses"] = dict(sorted(responses.items()))
    # Error schemas replaced by Problem go, unless something else still uses them.
    for name in sorted(displaced - {"Problem", "ProblemFieldError"}):  # HTTPValidationError first
        if f'#/components/schemas/{name}"' not in _json_text(schema, skip=name):
            components.pop(name, None)
    return schema


def _json_text(schema: dict[str, Any], *, skip: str) -> str:
    import json

    components = schema.get("components", {}).get("schemas", {})
    rest = {**schema, "components": {"schemas": {k: v for k, v in components.items() if k != skip}}}
    return json.dumps(rest)


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
