"""Field types shared by every domain's schemas: timestamps and money on the wire."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Field, PlainSerializer, WithJsonSchema


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
