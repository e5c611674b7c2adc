"""Field types shared by every domain's schemas: text, timestamps and money on the wire."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

# C0 controls, DEL and C1 controls; tab, LF and CR are allowed in multi-line text only.
# Lone surrogates (possible in JSON as "\ud800") cannot be encoded for PostgreSQL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAK = re.compile(r"[\t\n\r\u2028\u2029\x85]")


def _plain_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain NUL or other control characters")
    return value


def _single_line(value: str) -> str:
    _plain_text(value)
    if _LINE_BREAK.search(value):
        raise ValueError("must be a single line (no line breaks or tabs)")
    return value


# The one string type of every input that reaches the database (bodies, query and path
# parameters): PostgreSQL refuses NUL in text (SQLSTATE 22021) and a name with a line
# break could forge an email header. `Text` keeps line breaks and tabs, `Line` does not.
# Where a field has its own constraints, put them first and the check after:
# `Annotated[str, StringConstraints(...), SINGLE_LINE]`.
PLAIN_TEXT = AfterValidator(_plain_text)
SINGLE_LINE = AfterValidator(_single_line)
Text = Annotated[str, PLAIN_TEXT]
Line = Annotated[str, SINGLE_LINE]


def _utc_isoformat(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# Responses always carry an explicit offset (`+00:00`), never a naive timestamp.
UtcDatetime = Annotated[
    datetime,
    PlainSerializer(_utc_isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]

_SPACE_BEFORE_OFFSET = re.compile(r"^(.+T[\d:.]+) (\d{2}:?\d{2})$")


def _restore_plus_sign(value: Any) -> Any:
    # An unencoded `+` in a query string arrives as a space: `...T10:00:00 02:00`.
    if isinstance(value, str):
        return _SPACE_BEFORE_OFFSET.sub(r"\1+\2", value)
    return value


# A query-string datetime: an offset is required (naive input is 422).
QueryDatetime = Annotated[AwareDatetime, BeforeValidator(_restore_plus_sign)]


def _format_money(value: Decimal) -> str:
    return f"{value:.2f}"


MONEY_PATTERN = r"^-?\d+\.\d{2}$"

Money = Annotated[
    Decimal,
    PlainSerializer(_format_money, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": MONEY_PATTERN, "examples": ["25.00"]}, mode="serialization"
    ),
    Field(description="A decimal string with two places.", examples=["25.00"]),
]
