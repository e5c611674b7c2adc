"""Calls that go together: what arrives while a batch is on its way goes in the next one.

    together = Together(send_many, max_batch=32)
    answer = await together(item)  # send_many([item, ...]) answers each, in order

One batch is sent at a time. An item submitted to an idle ``Together`` goes on the
next turn of the event loop, with whatever was submitted in the same turn; items
submitted while a batch is on its way wait for it, then go together in the next one.
So batches grow only with the load, and no timer delays a lone item.

``send`` answers one result per item, in order; a result that is an exception is
raised to that item's caller alone. An exception raised by ``send`` goes to every
caller of its batch. A caller that went away (its request was cancelled) is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Together(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[Any]]],
        *,
        max_batch: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._on_idle = on_idle  # called when the queue is empty and nothing is on its way
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        sender = self._sender
        if sender is not None and sender.get_loop() is not loop:  # a test's earlier loop
            sender, self._queue = None, []
        self._queue.append((item, future))
        if sender is None:
            self._sender = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                size = self._max_batch or len(self._queue)
                batch, self._queue = self._queue[:size], self._queue[size:]
                try:
                    answers = await self._send([item for item, _ in batch])
                except Exception as exc:  # every caller of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # the process is stopping: nobody is left waiting
                    for _, future in batch + self._queue:
                        future.cancel()
                    raise
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():  # its request went away
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            if self._sender is asyncio.current_task():  # (not replaced on a new loop)
                self._sender = None
                if self._on_idle is not None:
                    self._on_idle()
