"""The OpenAPI schema: what FastAPI cannot derive by itself from the routes and models.

Generated clients are how frontends use this API, so the schema is part of the contract.
FastAPI derives paths, parameters and bodies; this module adds:

- **Error codes per operation.** Every function that can fail declares the domain errors
  it raises, once, where it is written:

  - a dependency (auth, "load the event or 404", a rate limit) with ``@raises(NotFound)``;
  - a route, for what its service raises, with ``responses=problem_responses(SoldOut, ...)``
    (or ``@raises`` on the endpoint function).

  An operation answers the union of its route's and all its dependencies' errors, plus
  ``validation_error`` when it has input and ``payload_too_large`` when it has a body. Each
  error status is documented as problem+json whose ``code`` is an enum of exactly those
  codes, so a ``switch (error.code)`` over a label the operation never answers does not
  compile in a generated TypeScript client. A new router needs nothing more than these
  declarations.
- **Security per operation**, from the bearer scheme its dependencies use: required
  (``[{HTTPBearer: []}]``), optional (``[{}, {HTTPBearer: []}]``: anonymous or a valid
  token) or none (``[]``: the credential endpoints, probes).
- ``Location`` on every 201, trailing-slash paths as the contract writes them,
  ``servers: [{url: "/"}]``, and request/response components that generators read alike
  (server-defaulted fields optional in requests and required in responses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from typing import Any, NamedTuple, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import (
    get_definitions,
    get_fields_from_routes,
    get_flat_models_from_fields,
    get_model_name_map,
    get_openapi,
)
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, Field

from app.core.errors import PROBLEM_JSON, STATUS_CODES, AppError, PayloadTooLarge, ValidationFailed

SCHEMAS = "#/components/schemas/"
BEARER = "HTTPBearer"
F = TypeVar("F", bound=Callable[..., Any])


# --- The error bodies ---------------------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem details body; `code` is stable and meant for clients to switch on."""

    type: str = Field(examples=["about:blank"])
    title: str = Field(description="The HTTP status phrase.", examples=["Conflict"])
    status: int = Field(description="The HTTP status code.", examples=[409])
    detail: str = Field(description="A human-readable explanation.", examples=["Sold out."])
    code: str = Field(
        description="A stable snake_case error code; each operation lists the codes it answers.",
        examples=["sold_out"],
    )


class ProblemFieldError(BaseModel):
    field: str = Field(description="Dotted path of the invalid input.", examples=["body.items.0"])
    message: str = Field(description="Why it is invalid.", examples=["Input should be >= 1"])


class ValidationProblem(Problem):
    """A `validation_error`: the body names every invalid field."""

    errors: list[ProblemFieldError] = Field(description="One entry per invalid field.")


# --- Declaring the errors a function raises ----------------------------------------------


def raises(*errors: type[AppError]) -> Callable[[F], F]:
    """Declare the domain errors a dependency or endpoint can raise (see the module doc)."""

    def declare(function: F) -> F:
        declared = getattr(function, "__raises__", ())
        function.__raises__ = (*declared, *errors)  # type: ignore[attr-defined]
        return function

    return declare


class _ErrorResponse(dict[str, Any]):
    """A `responses=` entry that remembers the error classes it documents."""

    errors: tuple[type[AppError], ...] = ()


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the errors its service raises, grouped by status."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, group in _by_status(errors).items():
        response = _ErrorResponse(_problem_response(status, group))
        response.errors = tuple(group)
        out[status] = response
    return out


def _by_status(errors: Iterable[type[AppError]]) -> dict[int, list[type[AppError]]]:
    groups: dict[int, dict[str, type[AppError]]] = {}
    for cls in errors:
        groups.setdefault(cls.status, {}).setdefault(cls.code, cls)
    return {status: list(groups[status].values()) for status in sorted(groups)}


def _problem_response(status: int, errors: list[type[AppError]]) -> dict[str, Any]:
    codes = [cls.code for cls in errors]
    examples = {cls.code: {"summary": cls.code, "value": _example(cls)} for cls in errors}
    return {
        "description": HTTPStatus(status).phrase + ": " + ", ".join(f"`{c}`" for c in codes),
        "content": {PROBLEM_JSON: {"schema": _problem_schema(codes), "examples": examples}},
    }


def _example(cls: type[AppError]) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(cls.status).phrase,
        "status": cls.status,
        "detail": cls.detail,
        "code": cls.code,
    }
    if cls.code == ValidationFailed.code:
        value["errors"] = [{"field": "body.name", "message": "Field required"}]
    return value


def _with_codes(ref: str, codes: list[str]) -> dict[str, Any]:
    overlay = {"type": "string", "enum": codes}
    return {
        "allOf": [
            {"$ref": SCHEMAS + ref},
            {"type": "object", "required": ["code"], "properties": {"code": overlay}},
        ]
    }


def _problem_schema(codes: list[str]) -> dict[str, Any]:
    """`Problem` with `code` narrowed to `codes`; `ValidationProblem` for validation errors."""
    others = [code for code in codes if code != ValidationFailed.code]
    if len(others) == len(codes):
        return _with_codes("Problem", codes)
    validation = _with_codes("ValidationProblem", [ValidationFailed.code])
    if not others:
        return validation
    return {"oneOf": [validation, _with_codes("Problem", others)]}


# --- Reading the routes -------------------------------------------------------------------


class ApiRoute(NamedTuple):
    path: str
    methods: frozenset[str]
    route: APIRoute


def route_contexts(app: FastAPI) -> list[Any]:
    """The app's routes, flattened: newer FastAPI nests included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI that copies included routes into app.routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def iter_api_routes(app: FastAPI) -> Iterator[ApiRoute]:
    """Every documented FastAPI route with its full path, through included routers."""
    for context in route_contexts(app):
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute) and route.include_in_schema:
            methods = frozenset(m.lower() for m in context.methods or ())
            yield ApiRoute(path=context.path_format, methods=methods, route=route)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def route_errors(route: APIRoute) -> list[type[AppError]]:
    """The domain errors a route declares, itself or through its dependencies."""
    errors: list[type[AppError]] = []
    for response in route.responses.values():
        errors.extend(getattr(response, "errors", ()))
    for call in (route.endpoint, *_calls(route.dependant)):
        errors.extend(getattr(call, "__raises__", ()))
    return errors


def route_security(route: APIRoute) -> list[dict[str, list[str]]]:
    """Required bearer, optional bearer (anonymous allowed) or no authentication."""
    schemes = [call for call in _calls(route.dependant) if isinstance(call, SecurityBase)]
    if not schemes:
        return []
    if any(not getattr(scheme, "anonymous_allowed", False) for scheme in schemes):
        return [{BEARER: []}]
    return [{}, {BEARER: []}]


# --- The schema ---------------------------------------------------------------------------


def _all_codes() -> list[str]:
    def subclasses(cls: type[AppError]) -> Iterator[type[AppError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return sorted({cls.code for cls in subclasses(AppError)} | set(STATUS_CODES.values()))


def _document_errors(operation: dict[str, Any], errors: list[type[AppError]]) -> None:
    has_input = bool(operation.get("parameters") or operation.get("requestBody"))
    if has_input:
        errors = [*errors, ValidationFailed]
    if "requestBody" in operation:
        errors = [*errors, PayloadTooLarge]
    responses = operation["responses"]
    responses.pop("422", None)  # FastAPI's HTTPValidationError
    for status, group in _by_status(errors).items():
        responses[str(status)] = _problem_response(status, group)
    operation["responses"] = dict(sorted(responses.items()))


def _refs(node: Any) -> list[str]:
    """The component names a part of the schema refers to."""
    return re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(node))


def _reachable(start: Iterable[str], components: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen and name in components:
            seen.add(name)
            todo.extend(_refs(components[name]))
    return seen


def _shape_request_and_response_schemas(schema: dict[str, Any]) -> None:
    """Requests: a server default is not a requirement, so `default` moves to the description
    (openapi-typescript would make the field required). Responses: every field is sent."""
    components = schema["components"]["schemas"]
    requests: set[str] = set()
    responses: set[str] = set()
    for item in schema["paths"].values():
        for operation in item.values():
            requests |= set(_refs(operation.get("requestBody")))
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    responses |= set(_refs(response))
    requests, responses = _reachable(requests, components), _reachable(responses, components)
    for name in requests - responses:
        for prop in components[name].get("properties", {}).values():
            if "default" in prop:
                default = prop.pop("default")
                if default not in (None, "", [], {}):
                    text = prop.get("description", "").rstrip()
                    prop["description"] = f"{text} Default: `{default}`.".lstrip()
    for name in responses - requests:
        component = components[name]
        if "properties" in component:
            component["required"] = list(component["properties"])
            for prop in component["properties"].values():
                prop.pop("default", None)


def _integer_bounds(schema: dict[str, Any], app: FastAPI) -> None:
    """FastAPI's OpenAPI model stores bounds as floats (`9.223372036854776e+18`): the
    components come back from the models themselves."""
    fields = get_fields_from_routes(list(app.routes))
    names = get_model_name_map(get_flat_models_from_fields(fields, known_models=set()))
    _, definitions = get_definitions(
        fields=fields, model_name_map=names, separate_input_output_schemas=True
    )
    components = schema["components"]["schemas"]
    components.update({name: definitions[name] for name in components if name in definitions})
    _whole_numbers(schema)


_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}


def _whole_numbers(node: Any) -> None:
    """`0`, not `0.0`, for a bound Pydantic renders from a Decimal."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                _whole_numbers(value)
    elif isinstance(node, list):
        for value in node:
            _whole_numbers(value)


def _readable_names(schema: dict[str, Any]) -> dict[str, Any]:
    """`EventPage`, not `Page_EventRead_`: the name a generated client gives the type."""
    text = re.sub(r'(?<=["/])Page_(\w+?)(?:Read)?_(?=")', r"\1Page", json.dumps(schema))
    return json.loads(re.sub(r'"Page\[(\w+?)(?:Read)?\]"', r'"\1Page"', text))


def documented_path(path: str) -> str:
    """A route's path as the contract writes it: API paths end with a slash (both are served)."""
    return path + "/" if path.startswith("/api/") and not path.endswith("/") else path


def postprocess_schema(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    _integer_bounds(schema, app)
    schema = _readable_names(schema)
    components = schema["components"]["schemas"]
    for model in (Problem, ProblemFieldError, ValidationProblem):
        body = model.model_json_schema(ref_template=SCHEMAS + "{model}")
        body.pop("$defs", None)
        components[model.__name__] = body
    components["ProblemCode"] = {
        "type": "string",
        "enum": _all_codes(),
        "description": "Every error code this API answers; operations narrow it.",
    }
    components["Problem"]["properties"]["code"] = {
        "$ref": SCHEMAS + "ProblemCode",
        "description": components["Problem"]["properties"]["code"]["description"],
    }
    components["ValidationProblem"] = {
        "description": components["ValidationProblem"]["description"],
        "allOf": [
            {"$ref": SCHEMAS + "Problem"},
            {
                "type": "object",
                "required": ["errors"],
                "properties": {"errors": components["ValidationProblem"]["properties"]["errors"]},
            },
        ],
    }
    for route in iter_api_routes(app):
        for method in route.methods:
            operation = schema["paths"][route.path][method]
            _document_errors(operation, route_errors(route.route))
            operation["security"] = route_security(route.route)
            created = operation["responses"].get("201")
            if created is not None:
                created["headers"] = {
                    "Location": {
                        "description": "Absolute URL of the created resource.",
                        "required": True,
                        "schema": {"type": "string", "format": "uri"},
                    }
                }
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _shape_request_and_response_schemas(schema)
    schema["paths"] = {documented_path(path): item for path, item in schema["paths"].items()}
    schema["servers"] = [{"url": "/"}]
    schema["components"]["schemas"] = dict(sorted(components.items()))
    return schema


def install_openapi(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Generate the schema once, post-processed (see postprocess_schema), from the
    routes of ``routers`` in that order (the app's other routes are not documented)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=[route for router in routers for route in router.routes],
                tags=app.openapi_tags,
                license_info=app.license_info,
            )
            app.openapi_schema = postprocess_schema(app, schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
