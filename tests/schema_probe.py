"""Hostile values for every input of every operation, read from the OpenAPI schema.

Schemathesis never puts a NUL in a query string and rarely tries numbers past a
column's range; this pass does, deterministically: each string parameter or body
field gets NUL and a line break, each integer one a number past bigint, one input at a
time (the others keep plain values). Every answer must be below 500 and a status the
operation documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

NASTY_STRINGS = ["a\x00b", "\x00", "line\r\nbreak"]
NASTY_INTEGERS = [10**20, -(10**20)]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = schema["components"]["schemas"][name]
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"]
            return _resolve(schema, options[0]) if options else {"type": "null"}
    return node


def _plain(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    """A simple value of the node's type (its example when it has one)."""
    node = _resolve(schema, node)
    if node.get("examples"):
        return node["examples"][0]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return {k: _plain(schema, v) for k, v in node.get("properties", {}).items()}
    if kind == "array":
        return [_plain(schema, node.get("items", {}))]
    if kind == "string":
        return _FORMATS.get(node.get("format", ""), "x")
    return {"integer": 1, "number": 1, "boolean": True}.get(kind or "", "x")


_FORMATS = {
    "date-time": "2030-01-01T10:00:00+00:00",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "someone@example.com",
}


def _mutations(schema: dict[str, Any], node: dict[str, Any], value: Any) -> Iterator[Any]:
    """The value with one leaf at a time replaced by a hostile one."""
    node = _resolve(schema, node)
    kind = node.get("type")
    if isinstance(value, dict) and (kind == "object" or "properties" in node):
        for key, child in node.get("properties", {}).items():
            for mutated in _mutations(schema, child, value.get(key)):
                yield {**value, key: mutated}
    elif isinstance(value, list) and kind == "array" and value:
        for mutated in _mutations(schema, node.get("items", {}), value[0]):
            yield [mutated, *value[1:]]
    elif kind == "string":
        yield from NASTY_STRINGS
    elif kind == "integer":
        yield from NASTY_INTEGERS


def probe(base: str, token: str) -> list[str]:
    """Every hostile request that answered 5xx or an undocumented status."""
    schema = httpx.get(f"{base}/api/schema", timeout=10).json()
    problems: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=15, headers=headers) as client:
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                for url, params, body in _requests(schema, path, operation):
                    r = client.request(method.upper(), url, params=params, json=body)
                    documented = r.status_code < 300 or str(r.status_code) in operation.get(
                        "responses", {}
                    )
                    if r.status_code >= 500 or not documented:
                        problems.append(
                            f"{method.upper()} {url} params={params!r} body={body!r}: "
                            f"{r.status_code} {r.text[:200]}"
                        )
    return problems


def _requests(
    schema: dict[str, Any], path: str, operation: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], Any]]:
    parameters = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
    # Required parameters get a plain value, optional ones are left out: only the
    # mutated input is unusual, so it reaches the code that would pass it on.
    plain = {
        p["name"]: _plain(schema, p.get("schema", {})) if p.get("required") else None
        for p in parameters
    }
    body_schema = (
        operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ).get("schema")
    body = _plain(schema, body_schema) if body_schema else None

    def build(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        url = path
        query = {}
        for p in parameters:
            value = values[p["name"]]
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(str(value), safe=""))
            elif value is not None:
                query[p["name"]] = value
        return re.sub(r"\{[^}]+\}", "1", url), query

    for p in parameters:
        current = _plain(schema, p.get("schema", {}))
        for nasty in _mutations(schema, p.get("schema", {}), current):
            url, query = build({**plain, p["name"]: nasty})
            yield url, query, body
    if body_schema is not None:
        url, query = build(plain)
        for mutated in _mutations(schema, body_schema, body):
            yield url, query, mutated
