"""The job worker's outbox dispatcher stops with the worker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from app.outbox.dispatcher import Dispatcher
from app.worker import make_worker, queue_name
from tests.factories import make_settings

# arq's worker closes its pool with a call that redis-py 5 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def test_stopping_the_worker_stops_its_dispatcher_even_when_a_job_is_cancelled(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(database_url, redis_url=redis_url)
    worker = make_worker(
        settings,
        queue_name=queue_name(f"{redis_prefix}-{uuid.uuid4().hex[:6]}"),
        handle_signals=False,
        poll_delay=0.05,
        keep_result=0,
        ctx={"settings": settings},
    )
    run = asyncio.create_task(worker.async_run())
    dispatcher: Dispatcher | None = None
    try:
        for _ in range(500):
            dispatcher = worker.ctx.get("outbox")
            if dispatcher is not None:
                break
            await asyncio.sleep(0.01)
        assert dispatcher is not None and dispatcher._task is not None  # sending
        # A job still running when the worker stops (the hold sweep can be): arq's
        # close() cancels it and re-raises its CancelledError before on_shutdown.
        worker.tasks["a running job"] = asyncio.create_task(asyncio.sleep(3600))
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()
        assert dispatcher._task is None  # stopped, not left sending
        assert "outbox" not in worker.ctx
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        if dispatcher is not None:
            await dispatcher.close()
