"""The OpenAPI schema as generated clients read it (shared/API.md, "The OpenAPI schema").

Each test names one property a frontend relies on; the TypeScript side is in
tests/test_spa_client.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from app.core.errors import PROBLEM_JSON, NotFound, PermissionDenied, SoldOut
from app.core.openapi import install_openapi, iter_api_routes, problem_responses, raises
from app.core.pagination import Page, Pagination, paginate
from tests.factories import make_settings

SCHEMAS = "#/components/schemas/"
METHODS = {"get", "put", "post", "delete", "patch"}
MONEY = r"^-?\d+\.\d{2}$"
# Public: anonymous access, and a bearer token that is sent is checked like anywhere else.
PUBLIC = {
    "events_list",
    "events_retrieve",
    "ticket_types_list",
    "ticket_types_retrieve",
    "auth_register",
    "auth_login",
    "auth_refresh",
    "auth_logout",
    "auth_password_reset_request",
    "auth_password_reset_confirm",
}
# The probes read no bearer token at all.
NO_BEARER = {"health_live", "health_ready"}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/schema")
    assert r.status_code == 200
    return r.json()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def by_id(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for _, _, op in operations(schema)}


def codes(operation: dict[str, Any], status: str) -> set[str]:
    """The `code` enum an error response declares (both members of a 422 `oneOf`)."""
    body = operation["responses"][status]["content"][PROBLEM_JSON]["schema"]
    found: set[str] = set()
    for member in body.get("oneOf", [body]):
        ref, overlay = member["allOf"]
        assert ref["$ref"] in {SCHEMAS + "Problem", SCHEMAS + "ValidationProblem"}
        assert overlay["required"] == ["code"]
        found |= set(overlay["properties"]["code"]["enum"])
    return found


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", value
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def test_servers_list_the_root(schema: dict[str, Any]) -> None:
    assert schema["servers"] == [{"url": "/"}]


def test_every_route_sets_its_own_readable_unique_operation_id(app: FastAPI) -> None:
    ids = []
    for route in iter_api_routes(app):
        assert route.route.operation_id, f"{route.path} sets no operation_id"
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", route.route.operation_id), route.route.operation_id
        ids.append(route.route.operation_id)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_operation_ids_and_summaries_reach_the_schema(schema: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids))
    assert {"events_list", "bookings_create", "bookings_cancel", "auth_login"} <= set(ids)
    for path, method, op in operations(schema):
        assert op.get("summary"), f"{method} {path}"


def test_paths_are_written_as_the_contract_writes_them(schema: dict[str, Any]) -> None:
    for path in schema["paths"]:
        assert path.endswith("/") or path.startswith("/health/"), path
    assert "/api/events/{event_id}/ticket-types/" in schema["paths"]


def test_component_names_are_readable(schema: dict[str, Any]) -> None:
    names = set(schema["components"]["schemas"])
    for name in names:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
    assert {"EventPage", "BookingPage", "EventBookingPage"} <= names
    page = by_id(schema)["events_list"]["responses"]["200"]["content"]["application/json"]
    assert page["schema"] == {"$ref": SCHEMAS + "EventPage"}


def test_integer_bounds_are_integers(schema: dict[str, Any]) -> None:
    bounds = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    floats = [p for p, v in walk(schema) if p.rsplit("/", 1)[-1] in bounds and type(v) is float]
    assert floats == []
    event_id = schema["components"]["schemas"]["BookingCreate"]["properties"]["event_id"]
    assert event_id["maximum"] == 2**63 - 1 and event_id["minimum"] == 1


def test_money_in_responses_is_a_two_place_decimal_string(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for component, field in (
        ("TicketTypeRead", "price"),
        ("BookingRead", "total_price"),
        ("BookingItemRead", "price_at_booking"),
    ):
        prop = components[component]["properties"][field]
        assert prop["type"] == "string" and prop["pattern"] == MONEY, (component, prop)
        assert all(re.fullmatch(MONEY, example) for example in prop["examples"])


def test_every_201_declares_location(schema: dict[str, Any]) -> None:
    created = [op for _, _, op in operations(schema) if "201" in op["responses"]]
    assert {op["operationId"] for op in created} >= {
        "auth_register",
        "events_create",
        "ticket_types_create",
        "bookings_create",
    }
    for op in created:
        header = op["responses"]["201"]["headers"]["Location"]
        assert header["required"] is True, op["operationId"]
        assert header["schema"] == {"type": "string", "format": "uri"}


def test_error_responses_narrow_problem_to_the_codes_the_operation_answers(
    schema: dict[str, Any],
) -> None:
    known = set(schema["components"]["schemas"]["ProblemCode"]["enum"])
    for path, method, op in operations(schema):
        for status, response in op["responses"].items():
            if status[0] not in "45":
                continue
            content = response["content"]
            assert list(content) == [PROBLEM_JSON], f"{method} {path} {status}"
            answered = codes(op, status)
            assert answered and answered <= known, (op["operationId"], status, answered)
            # The examples show each code, and only those.
            assert set(content[PROBLEM_JSON]["examples"]) == answered
            for code in answered:
                assert content[PROBLEM_JSON]["examples"][code]["value"]["status"] == int(status)


def test_codes_come_from_the_route_and_its_dependencies(schema: dict[str, Any]) -> None:
    ops = by_id(schema)
    cancel = ops["bookings_cancel"]
    assert codes(cancel, "401") == {"not_authenticated", "invalid_token"}  # CurrentUser
    assert codes(cancel, "404") == {"not_found"}
    assert codes(cancel, "409") == {"already_cancelled", "event_not_bookable"}  # the route
    assert codes(cancel, "422") == {"validation_error"}  # the path parameter
    assert "403" not in cancel["responses"]
    # A failed login is invalid_credentials; invalid_token only for a bad bearer token sent.
    assert codes(ops["auth_login"], "401") == {"invalid_credentials", "invalid_token"}
    assert codes(ops["auth_refresh"], "401") == {"invalid_token"}
    assert codes(ops["events_retrieve"], "401") == {"invalid_token"}  # optional bearer
    assert codes(ops["events_retrieve"], "404") == {"not_found"}  # ValidEvent
    assert codes(ops["events_list"], "401") == {"not_authenticated", "invalid_token"}  # me
    assert codes(ops["events_update"], "403") == {"permission_denied"}  # OwnedEvent
    assert codes(ops["bookings_create"], "429") == {"rate_limited"}  # Limiter
    assert codes(ops["bookings_create"], "422") == {"validation_error", "idempotency_key_reused"}
    assert codes(ops["auth_register"], "413") == {"payload_too_large"}  # a body


class ThingRead(BaseModel):
    id: int


async def test_declared_errors_are_one_source_per_function() -> None:
    """A dependency declares its errors once; every route using it answers them."""

    @raises(NotFound)
    async def load_thing() -> int:
        return 1

    router = APIRouter()

    @router.get("/api/things/{thing_id}", operation_id="things_retrieve", summary="A thing")
    async def get_thing(thing_id: int, thing: int = Depends(load_thing)) -> int:
        return thing

    @router.post(
        "/api/things/{thing_id}/buy",
        operation_id="things_buy",
        summary="Buy a thing",
        responses=problem_responses(SoldOut, PermissionDenied),
    )
    async def buy_thing(thing_id: int, thing: int = Depends(load_thing)) -> int:
        return thing

    @router.get("/api/things", operation_id="things_list", summary="Things")
    async def list_things(page: Pagination) -> Page[ThingRead]:
        things = [ThingRead(id=n) for n in range(1, 26)]
        return paginate(page, len(things), things[page.offset : page.offset + page.limit])

    app = FastAPI()
    app.include_router(router)
    install_openapi(app, [router])
    schema = app.openapi()
    ops = by_id(schema)
    # A new list is one paginate() call: a readable page component, absolute links.
    assert "ThingPage" in schema["components"]["schemas"]
    app.state.settings = make_settings("postgresql+asyncpg://unused/db")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://spa.test"
    ) as client:
        page = (await client.get("/api/things?page_size=10&page=2")).json()
    assert [t["id"] for t in page["results"]] == list(range(11, 21))
    assert page["next"] == "http://spa.test/api/things/?page_size=10&page=3"
    assert page["previous"] == "http://spa.test/api/things/?page_size=10&page=1"
    assert codes(ops["things_retrieve"], "404") == {"not_found"}
    assert set(ops["things_retrieve"]["responses"]) == {"200", "404", "422"}
    assert codes(ops["things_buy"], "404") == {"not_found"}
    assert codes(ops["things_buy"], "409") == {"sold_out"}
    assert codes(ops["things_buy"], "403") == {"permission_denied"}
    assert ops["things_buy"]["security"] == []


def test_errors_exist_only_on_the_422_schema_where_they_are_required(
    schema: dict[str, Any],
) -> None:
    components = schema["components"]["schemas"]
    assert "errors" not in components["Problem"]["properties"]
    problem, extra = components["ValidationProblem"]["allOf"]
    assert problem == {"$ref": SCHEMAS + "Problem"}
    assert extra["required"] == ["errors"]
    for path, method, op in operations(schema):
        for status, response in op["responses"].items():
            body = response.get("content", {}).get(PROBLEM_JSON, {}).get("schema", {})
            uses_validation = SCHEMAS + "ValidationProblem" in str(body)
            assert uses_validation == (status == "422"), f"{method} {path} {status}"


def _reachable(schema: dict[str, Any], roots: list[Any]) -> set[str]:
    components = schema["components"]["schemas"]
    seen: set[str] = set()
    todo = [v[len(SCHEMAS) :] for root in roots for p, v in walk(root) if p.endswith("$ref")]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [v[len(SCHEMAS) :] for p, v in walk(components[name]) if p.endswith("$ref")]
    return seen


def _objects(schema: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    components = schema["components"]["schemas"]
    return {n: components[n] for n in names if "properties" in components[n]}


def test_request_and_response_schemas_are_separate_components(schema: dict[str, Any]) -> None:
    ops = list(operations(schema))
    requests = _reachable(schema, [op.get("requestBody", {}) for _, _, op in ops])
    responses = _reachable(
        schema,
        [r for _, _, op in ops for s, r in op["responses"].items() if s.startswith("2")],
    )
    assert set(_objects(schema, requests)) & set(_objects(schema, responses)) == set()
    # Responses: every field is always sent, so every field is required.
    for name, component in _objects(schema, responses).items():
        assert set(component["required"]) == set(component["properties"]), name
    # Requests: a field the server defaults is optional and carries no `default` (which
    # openapi-typescript reads as "required").
    for name, component in _objects(schema, requests).items():
        for field, prop in component["properties"].items():
            assert "default" not in prop, (name, field)
    components = schema["components"]["schemas"]
    assert "role" not in components["UserRegister"]["required"]
    assert "description" not in components["EventCreate"]["required"]
    assert "token_type" in components["TokenPair"]["required"]
    assert "description" in components["EventRead"]["required"]


def test_public_operations_allow_anonymous_access_and_others_require_the_bearer(
    schema: dict[str, Any],
) -> None:
    for _, _, op in operations(schema):
        operation_id = op["operationId"]
        if operation_id in PUBLIC:
            assert op["security"] == [{}, {"HTTPBearer": []}], operation_id
            assert "invalid_token" in codes(op, "401"), operation_id
        elif operation_id in NO_BEARER:
            assert op["security"] == [], operation_id
        else:
            assert op["security"] == [{"HTTPBearer": []}], operation_id
            assert "not_authenticated" in codes(op, "401"), operation_id


def test_every_route_is_the_only_one_matching_its_requests(app: FastAPI) -> None:
    """The app matches its hot routes first (app.main.MATCHED_FIRST) and documents them in
    their own order: that changes nothing only while no request matches two routes."""
    from starlette.routing import Match

    from app.main import DOCUMENTED

    checked = 0
    for router in DOCUMENTED:
        for route in router.routes:
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in route.methods or ():
                scope = {"type": "http", "method": method, "path": path, "root_path": ""}
                # One route of all the documented ones, and one of the app's (its
                # included routers and its own routes), whatever their order.
                documented = [
                    other.path
                    for each in DOCUMENTED
                    for other in each.routes
                    if other.matches(scope)[0] == Match.FULL
                ]
                assert documented == [route.path], (method, path, documented)
                in_app = [c for c in app.router.routes if c.matches(scope)[0] == Match.FULL]
                assert len(in_app) == 1, (method, path, in_app)
                checked += 1
    assert checked >= 40
