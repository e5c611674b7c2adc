"""A running dispatcher under a stream of commits: an idle one sends at once, a busy one
lets the next batch gather; every email is sent once, in the order it was committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from app.core.config import Settings
from app.notifications.emails import Email
from app.outbox import dispatcher as dispatcher_module
from app.outbox.dispatcher import Dispatcher
from app.outbox.service import record_emails
from tests.factories import make_settings
from tests.test_outbox_batch import reset_email


class Sent:
    """The batches of emails the dispatcher handed over, each as its recipients."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.changed = asyncio.Event()

    @property
    def recipients(self) -> list[str]:
        return [to for batch in self.batches for to in batch]

    async def wait_for(self, count: int, within: float = 20.0) -> float:
        """Seconds until ``count`` emails were sent in all."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while len(self.recipients) < count:
                self.changed.clear()
                await self.changed.wait()
        return time.monotonic() - started


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    record = Sent()
    deliver = dispatcher_module.deliver_emails

    async def recording(
        settings: Settings, emails: Sequence[Email], *, within_seconds: float
    ) -> list[Exception | None]:
        outcomes = await deliver(settings, emails, within_seconds=within_seconds)
        record.batches.append([e.to for e in emails])
        record.changed.set()
        return outcomes

    monkeypatch.setattr(dispatcher_module, "deliver_emails", recording)
    return record


@pytest.fixture(autouse=True)
def gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream's batches a second apart: longer than any few commits take here."""
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 1.0)


class CountingDispatcher(Dispatcher):
    """A dispatcher that counts the commits it was notified of."""

    notices = 0

    def _notified(self, *args: Any) -> None:
        self.notices += 1
        super()._notified(*args)


async def running_dispatcher(
    database_url: str, **options: Any
) -> AsyncIterator[CountingDispatcher]:
    # Emails go to the log (no SMTP_HOST); retries are never due within a test.
    dispatcher = CountingDispatcher(
        make_settings(database_url, outbox_in_process=False), database_url, **options
    )
    dispatcher.start()
    try:
        async with asyncio.timeout(10):
            while dispatcher._listener is None:  # LISTEN first: commits must wake it
                await asyncio.sleep(0.01)
        yield dispatcher
    finally:
        await dispatcher.close()


async def commit_one_by_one(db: Any, numbers: range) -> None:
    """Each email stored in a transaction of its own, as bookings store theirs."""
    for n in numbers:
        async with db() as session:
            await record_emails(session, [reset_email(n)])
            await session.commit()


def addresses(numbers: range) -> list[str]:
    return [reset_email(n).to for n in numbers]


async def test_a_stream_of_commits_is_sent_in_gathered_batches_once_and_in_order(
    database_url: str, db: Any, sent: Sent
) -> None:
    async for _ in running_dispatcher(database_url):
        await commit_one_by_one(db, range(1))
        await sent.wait_for(1)
        # A stream now: the commits that follow at once gather.
        await commit_one_by_one(db, range(1, 16))
        await sent.wait_for(16)
        await asyncio.sleep(0.3)
    assert sent.recipients == addresses(range(16))
    assert sent.batches[0] == addresses(range(1))
    assert len(sent.batches) <= 3, sent.batches


async def test_an_idle_dispatcher_sends_a_commit_without_gathering(
    database_url: str, db: Any, sent: Sent
) -> None:
    async for _ in running_dispatcher(database_url):
        await commit_one_by_one(db, range(1))
        assert await sent.wait_for(1) < 0.8
        await asyncio.sleep(1.2)  # longer than a gathering: idle again
        await commit_one_by_one(db, range(1, 2))
        assert await sent.wait_for(2) < 0.8
    assert sent.batches == [addresses(range(1)), addresses(range(1, 2))]


async def test_during_a_stream_full_batches_follow_at_once_and_commits_wake_nobody(
    database_url: str, db: Any, sent: Sent
) -> None:
    async for dispatcher in running_dispatcher(database_url, batch_size=3):
        await commit_one_by_one(db, range(1))
        await sent.wait_for(1)
        await commit_one_by_one(db, range(1, 2))  # right after a batch: a stream
        async with asyncio.timeout(0.9):
            while not dispatcher._deaf:  # its LISTEN paused
                await asyncio.sleep(0.01)
        before_the_stream = dispatcher.notices
        await commit_one_by_one(db, range(2, 17))
        await sent.wait_for(17)
        assert dispatcher.notices == before_the_stream  # no commit of the stream woke it
        await asyncio.sleep(2.5)  # the stream has ended: listening again
        await commit_one_by_one(db, range(17, 18))
        assert await sent.wait_for(18) < 0.8
    batches = [range(0, 1), *(range(n, n + 3) for n in range(1, 16, 3)), range(16, 17)]
    assert sent.batches == [*map(addresses, batches), addresses(range(17, 18))]
    assert dispatcher.notices == before_the_stream + 1  # listening again afterwards
