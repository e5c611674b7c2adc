"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from app.core.errors import ServiceUnavailable
from app.core.openapi import problem_responses
from app.core.redis import redis_state

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
    summary="The database answers (Redis trouble is reported, not unready)",
    description="200 when the database answers, else 503 `service_unavailable`. A configured "
    "Redis that does not answer is reported as `degraded` in `checks.redis` (and `status`): "
    "bookings go on without it, so the instance stays in service.",
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
        state = redis_state(request.app.state)
        try:
            async with asyncio.timeout(1):
                await redis.ping()
        except Exception as exc:
            state.failed("readiness reports it degraded", exc)
            checks["redis"] = "degraded"
        else:
            state.answered()
            checks["redis"] = "ok"
    status = "degraded" if "degraded" in checks.values() else "ok"
    return HealthStatus(status=status, checks=checks)
