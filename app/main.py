"""The ASGI application: create_app() wires settings, database, routers, errors and middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.admin.console import PREFIX as CONSOLE_PREFIX
from app.admin.console import install_console
from app.auth.router import router as auth_router
from app.bookings.router import router as bookings_router
from app.core import health
from app.core.catalogue_cache import CatalogueCache, CatalogueCacheMiddleware
from app.core.config import Settings, get_settings
from app.core.db import (
    create_engine,
    make_sessionmaker,
    resolve_database_url,
    single_statement_engine,
)
from app.core.docs import install_docs
from app.core.handlers import install_error_handlers
from app.core.logging import configure_logging, stop_buffering
from app.core.middleware import (
    BodyLimitMiddleware,
    StripTrailingSlashMiddleware,
    TrustedProxyMiddleware,
)
from app.core.observability import install_observability
from app.core.openapi import install_openapi
from app.core.replica import create_read_engine
from app.events.router import router as events_router
from app.holds.router import router as holds_router
from app.waitlist.router import router as waitlist_router
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger("app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.database_url:
        url = settings.database_url
    else:
        # Embedded default: start PostgreSQL under .data/ and bring the schema up to date.
        from app.core.migrate import upgrade_head

        url = await to_thread.run_sync(resolve_database_url, settings)
        await to_thread.run_sync(upgrade_head, url)
    engine = create_engine(settings, url)
    app.state.engine = engine
    # The same pool, for single-statement reads that need no transaction.
    app.state.autocommit_engine = single_statement_engine(engine, settings)
    app.state.sessionmaker = make_sessionmaker(engine)
    # Anonymous catalogue reads on the replica (DATABASE_READ_URL), when there is one.
    read_engine = create_read_engine(settings, url)
    app.state.read_sessionmaker = make_sessionmaker(read_engine) if read_engine else None
    app.state.redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        app.state.redis = Redis.from_url(settings.redis_url, socket_timeout=2)
    # Rate limits share Redis across workers. Emails and webhooks wait in the outbox
    # table; this process sends them unless a worker does (see Settings).
    from app.core.ratelimit import limiter_for
    from app.outbox.dispatcher import Dispatcher

    limiter_for(app.state)
    outbox = Dispatcher(settings, url)
    app.state.outbox = outbox
    app.state.metrics_probes = [outbox.gauges]
    if settings.dispatches_in_process:
        outbox.start()
    from app.auth.maintenance import purge_refresh_tokens_forever
    from app.bookings.maintenance import purge_idempotency_keys_forever

    purgers = [
        asyncio.create_task(
            purge_idempotency_keys_forever(
                app.state.sessionmaker, settings.idempotency_key_ttl_hours
            )
        ),
        asyncio.create_task(purge_refresh_tokens_forever(app.state.sessionmaker)),
    ]
    tasks = list(purgers)
    if not settings.redis_url:
        # Without Redis there is no worker: expired holds are swept by this process
        # (with Redis, by the worker's cron job).
        from app.holds.maintenance import sweep_forever

        tasks.append(
            asyncio.create_task(
                sweep_forever(
                    app.state.sessionmaker,
                    settings,
                    # The offers' emails are outbox rows of the sweep's transaction.
                    lambda offers: None,
                )
            )
        )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await outbox.close()
        if app.state.redis is not None:
            await app.state.redis.aclose()
        await engine.dispose()
        if read_engine is not None:
            await read_engine.dispose()
        # uvicorn ends the process by raising the signal it caught again, which skips
        # atexit: the lines it writes until then go out at once.
        stop_buffering()


# The routers in the order the API documents them (the schema's paths and tags).
DOCUMENTED = (
    health.router,
    auth_router,
    events_router,
    bookings_router,
    holds_router,
    waitlist_router,
    webhooks_router,
)
# A request is matched against the routes in the order they were included, so the hot
# ones come first (health probes, bookings, holds, the catalogue). Measured, CPU to
# match: POST /api/bookings 48-50 -> 11-20 us, POST /api/holds 61-63 -> 23-24 us, the
# events list and detail 32-36 -> 35-39 us. No two routes match one request, so the
# order changes nothing else (tests/test_openapi_schema.py).
MATCHED_FIRST = (health.router, bookings_router, holds_router, events_router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    app = FastAPI(
        title="Event Booking API",
        version="0.1.0",
        summary="Events, ticket types and bookings that never oversell.",
        license_info={"name": "MIT", "identifier": "MIT"},
        openapi_url="/api/schema",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.router.redirect_slashes = False
    install_error_handlers(app)
    for router in MATCHED_FIRST + tuple(r for r in DOCUMENTED if r not in MATCHED_FIRST):
        app.include_router(router)
    if settings.catalogue_cache_seconds:
        # Innermost of the middleware: CORS, request ids, metrics and logs see cache hits.
        app.add_middleware(
            CatalogueCacheMiddleware, cache=CatalogueCache(settings.catalogue_cache_seconds)
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After", "X-Request-ID"],
        )
    install_console(app, settings)
    app.add_middleware(StripTrailingSlashMiddleware, keep=(f"{CONSOLE_PREFIX}/",))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.trusted_proxies:
        app.add_middleware(TrustedProxyMiddleware, networks=settings.trusted_proxies)
    install_docs(app)
    install_openapi(app, DOCUMENTED)
    install_observability(app)
    return app


app = create_app()
