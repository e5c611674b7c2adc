"""Page-number pagination: `{count, next, previous, results}` with links keeping the query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

T = TypeVar("T")

MAX_PAGE_SIZE = 100
# PostgreSQL's OFFSET is a bigint: a page past it is past any table's end.
_MAX_OFFSET = 2**63 - 1


class Page(BaseModel, Generic[T]):
    count: int = Field(description="Total number of items matching the filters.", examples=[42])
    next: str | None = Field(description="Path of the next page, or null.", examples=[None])
    previous: str | None = Field(description="Path of the previous page, or null.", examples=[None])
    results: list[T]


@dataclass(frozen=True, slots=True)
class PageParams:
    page: int
    page_size: int
    request: Request

    @property
    def offset(self) -> int:
        """Rows to skip; capped at bigint, so any page past the end is 200 with no results."""
        return min((self.page - 1) * self.page_size, _MAX_OFFSET)

    def _link(self, page: int) -> str:
        # The contract's paths end with a slash; keep every other query parameter.
        path = self.request.scope.get("original_path") or self.request.url.path
        if not path.endswith("/"):
            path += "/"
        params = [(k, v) for k, v in self.request.query_params.multi_items() if k != "page"]
        params.append(("page", str(page)))
        if "page_size" not in self.request.query_params:
            params.append(("page_size", str(self.page_size)))
        return f"{path}?{urlencode(params)}"

    def build(self, count: int, results: list[T]) -> Page[T]:
        has_next = self.offset + self.page_size < count
        has_previous = self.page > 1
        previous_page = min(self.page - 1, max(1, -(-count // self.page_size)))
        return Page[T](
            count=count,
            next=self._link(self.page + 1) if has_next else None,
            previous=self._link(previous_page) if has_previous else None,
            results=results,
        )


async def page_params(
    request: Request,
    page: Annotated[
        int,
        Query(ge=1, description="1-based page number; a page past the last one is empty."),
    ] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (max 100).")
    ] = 10,
) -> PageParams:
    return PageParams(page=page, page_size=page_size, request=request)


Pagination = Annotated[PageParams, Depends(page_params)]
