"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from app.core.errors import ServiceUnavailable
from app.core.openapi import problem_responses

router = APIRouter(prefix="/health", tags=["health"])


class HealthStatus(BaseModel):
    status: str = "ok"
    checks: dict[str, str] | None = None


@router.get("/live", operation_id="health_live", summary="The process is running")
async def live() -> HealthStatus:
    return HealthStatus()


@router.get(
    "/ready",
    operation_id="health_ready",
    summary="The database (and Redis, when configured) answer",
    responses=problem_responses(ServiceUnavailable),
)
async def ready(request: Request) -> HealthStatus:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        raise ServiceUnavailable("The database does not answer.") from exc
    redis = getattr(request.app.state, "redis", None)
    if redis is not None:
        try:
            async with asyncio.timeout(2):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            raise ServiceUnavailable("Redis does not answer.") from exc
    return HealthStatus(checks=checks)
