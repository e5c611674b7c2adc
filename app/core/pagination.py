"""Page-number pagination: one `paginate()` builds `{count, next, previous, results}`.

A list endpoint takes ``page: Pagination``, hands ``page.offset`` and ``page.limit`` to its
service (services never see the request) and returns ``paginate(page, count, results)``:

    async def list_holds(uow: UoW, page: Pagination) -> Page[HoldRead]:
        count, rows = await service.list_holds(uow, offset=page.offset, limit=page.limit)
        return paginate(page, count, [HoldRead.from_row(row) for row in rows])

The schema component is named after the item: ``Page[HoldRead]`` is ``HoldPage``
(app.core.openapi renames it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.links import public_url

T = TypeVar("T")

MAX_PAGE_SIZE = 100
# PostgreSQL's OFFSET is a bigint: a page past it is past any table's end.
_MAX_OFFSET = 2**63 - 1


class Page(BaseModel, Generic[T]):
    count: int = Field(description="Total number of items matching the filters.", examples=[42])
    next: str | None = Field(
        description="Absolute URL of the next page (same filters), or null.",
        examples=["https://api.example.com/api/events/?page=3&page_size=10"],
    )
    previous: str | None = Field(
        description="Absolute URL of the previous page (same filters), or null.",
        examples=["https://api.example.com/api/events/?page=1&page_size=10"],
    )
    results: list[T]


@dataclass(frozen=True, slots=True)
class PageQuery:
    """The page asked for, and the list's own URL and query for the links."""

    page: int
    page_size: int
    path: str
    query: tuple[tuple[str, str], ...]
    base_url: str

    @property
    def offset(self) -> int:
        """Rows to skip; capped at bigint, so any page past the end is 200 with no results."""
        return min((self.page - 1) * self.page_size, _MAX_OFFSET)

    @property
    def limit(self) -> int:
        return self.page_size

    def link(self, page: int) -> str:
        # Every other parameter as sent, in its place; `page` last, `page_size` always there.
        params = [(k, v) for k, v in self.query if k != "page"]
        params.append(("page", str(page)))
        if not any(k == "page_size" for k, _ in self.query):
            params.append(("page_size", str(self.page_size)))
        return f"{self.base_url}{self.path}?{urlencode(params)}"


async def count_and_page(
    session: AsyncSession,
    counted: Any,
    query: Select[Any],
    where: Sequence[ColumnElement[bool]],
    *,
    order_by: Sequence[ColumnElement[Any]],
    offset: int,
    limit: int,
) -> tuple[int, Sequence[Row[Any]]]:
    """What a service's list answers: how many rows of ``counted`` (a table) match ``where``,
    and one page of ``query`` narrowed by them, in ``order_by`` order. The count reads that
    table alone, without the joins that only add columns to the page."""
    count = await session.scalar(select(func.count()).select_from(counted).where(*where))
    page = query.where(*where).order_by(*order_by).offset(offset).limit(limit)
    return count or 0, (await session.execute(page)).all()


def paginate(page: PageQuery, count: int, results: Sequence[T]) -> Page[T]:
    """One page of a list with absolute links that keep every other query parameter."""
    last_page = max(1, -(-count // page.page_size))
    return Page[T](
        count=count,
        next=page.link(page.page + 1) if page.offset + page.page_size < count else None,
        previous=page.link(min(page.page - 1, last_page)) if page.page > 1 else None,
        results=list(results),
    )


async def page_query(
    request: Request,
    page: Annotated[
        int,
        Query(
            ge=1,
            le=2**31 - 1,
            description="1-based page number (at most 2147483647, else 422); a page past the "
            "last one is empty.",
        ),
    ] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 100).")
    ] = 10,
) -> PageQuery:
    # The contract's paths end with a slash; links use that form whichever was requested.
    path = request.scope.get("original_path") or request.url.path
    if not path.endswith("/"):
        path += "/"
    return PageQuery(
        page=page,
        page_size=page_size,
        path=path,
        query=tuple(request.query_params.multi_items()),
        base_url=public_url(request, ""),
    )


Pagination = Annotated[PageQuery, Depends(page_query)]
