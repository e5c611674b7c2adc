"""Emails through a real SMTP server: booking confirmed and cancelled, password reset, the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import text

from app.auth.models import User
from app.core.config import Settings
from app.main import create_app
from app.notifications.emails import Email, render
from app.notifications.jobs import send_with_retries
from app.outbox.dispatcher import Dispatcher
from app.worker import make_worker, queue_name
from tests.factories import (
    TEST_PASSWORD,
    asgi_client,
    auth,
    confirmed_booking,
    make_event,
    make_settings,
    make_ticket_type,
)
from tests.redis_server import SmtpSink, html_of, text_of

# arq's worker closes its pool with a call that redis-py 5 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

NEW_PASSWORD = "Brand-New-Passphrase-77"


def smtp_settings(database_url: str, sink: SmtpSink, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        # Emails leave through the outbox: sent from this process unless Redis is set
        # (then the worker sends them); failed sends retried after 0.2 s, 0.4 s, ...
        "outbox_in_process": overrides.get("redis_url") is None,
        "outbox_retry_first_seconds": 0.2,
        **overrides,
    }
    return make_settings(
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_starttls=False,
        email_from="Event Booking <tickets@example.org>",
        **values,
    )


async def running_app(settings: Settings, prefix: str | None = None) -> AsyncIterator[Any]:
    application = create_app(settings)
    if prefix:
        application.state.redis_key_prefix = prefix
    async with application.router.lifespan_context(application):
        yield application


def client_for(application: Any) -> httpx.AsyncClient:
    return asgi_client(application, raise_app_exceptions=False)


@pytest.fixture
async def mail_app(database_url: str, smtp_sink: SmtpSink) -> AsyncIterator[Any]:
    """The app without Redis: emails are sent by background tasks of the process."""
    async for application in running_app(smtp_settings(database_url, smtp_sink)):
        yield application


@pytest.fixture
async def mail_client(mail_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(mail_app) as c:
        yield c


@pytest.fixture
async def queued(
    database_url: str, smtp_sink: SmtpSink, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Any, Callable[[], Worker]]]:
    """The app with Redis (the worker sends the outbox) and a way to start a worker."""
    prefix = f"{redis_prefix}-{uuid.uuid4().hex[:6]}"
    settings = smtp_settings(database_url, smtp_sink, redis_url=redis_url)
    workers: list[tuple[Worker, asyncio.Task[None]]] = []

    def start_worker() -> Worker:
        worker = make_worker(
            settings,
            queue_name=queue_name(prefix),
            handle_signals=False,
            poll_delay=0.05,
            keep_result=0,
            ctx={"settings": settings},
        )
        workers.append((worker, asyncio.create_task(worker.async_run())))
        return worker

    async for application in running_app(settings, prefix):
        yield application, start_worker
    for worker, task in workers:
        # arq's close() cancels a job still running (the hold sweep's cron can be) and
        # re-raises that job's CancelledError from its gather: it is the job's, not ours.
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def ticketed_event(db: Any, organizer: User, **fields: Any) -> tuple[Any, Any, Any]:
    event = await make_event(db, organizer.id, name=fields.pop("name", "Jazz <Night> & Co"))
    standard = await make_ticket_type(db, event.id, name="Standard", price=Decimal("25.00"))
    vip = await make_ticket_type(db, event.id, name="VIP", price=Decimal("80.50"))
    return event, standard, vip


def reset_link_in(message: Any) -> str:
    match = re.search(r"https?://\S+/password-reset-confirm/\S+", text_of(message))
    assert match, text_of(message)
    return match.group(0)


# ------------------------------------------------------------------ bookings


async def test_a_booking_sends_exactly_one_confirmation_email(
    mail_client: httpx.AsyncClient,
    mail_app: Any,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    event, standard, vip = await ticketed_event(db, organizer)
    booking = await confirmed_booking(
        mail_client, attendee, event.id, (standard.id, 2), (vip.id, 1)
    )

    [message] = await smtp_sink.wait_for(1, to=attendee.email)
    await mail_app.state.outbox.wait_idle()
    await asyncio.sleep(0.3)
    assert len(smtp_sink.messages) == 1
    assert message["From"] == "Event Booking <tickets@example.org>"
    assert message["Subject"] == "Booking confirmed: Jazz <Night> & Co"
    text = text_of(message)
    assert booking["booking_reference"] in text
    assert "2 x Standard at 25.00 = 50.00" in text
    assert "1 x VIP at 80.50 = 80.50" in text
    assert "Total: 130.50" in text
    html = html_of(message)
    assert "Jazz &lt;Night&gt; &amp; Co" in html
    assert booking["booking_reference"] in html and "130.50" in html


async def test_a_replayed_booking_request_sends_no_second_email(
    mail_client: httpx.AsyncClient,
    mail_app: Any,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    event, standard, _ = await ticketed_event(db, organizer)
    body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 1}]}
    headers = {**auth(attendee), "Idempotency-Key": "confirm-once"}
    for _ in range(2):
        response = await mail_client.post("/api/bookings/", json=body, headers=headers)
        assert response.status_code == 201, response.text
    await smtp_sink.wait_for(1)
    await mail_app.state.outbox.wait_idle()
    await asyncio.sleep(0.3)
    assert len(smtp_sink.messages) == 1


async def test_cancelling_a_booking_emails_the_attendee(
    mail_client: httpx.AsyncClient,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    event, standard, _ = await ticketed_event(db, organizer)
    booking = await confirmed_booking(mail_client, attendee, event.id, (standard.id, 3))
    await smtp_sink.wait_for(1)
    reference = booking["booking_reference"]
    response = await mail_client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    assert response.status_code == 200, response.text

    messages = await smtp_sink.wait_for(2, to=attendee.email)
    cancelled = [m for m in messages if m["Subject"].startswith("Booking cancelled")]
    assert len(cancelled) == 1
    text = text_of(cancelled[0])
    assert reference in text and "as you asked" in text and "Total: 75.00" in text


async def test_cancelling_an_event_emails_every_booking_once(
    mail_client: httpx.AsyncClient,
    mail_app: Any,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    create_user: Callable[..., Any],
) -> None:
    event, standard, vip = await ticketed_event(db, organizer, name="Open Air")
    first, second = await create_user("attendee"), await create_user("attendee")
    bookings = [
        await confirmed_booking(mail_client, first, event.id, (standard.id, 1)),
        await confirmed_booking(mail_client, first, event.id, (vip.id, 2)),
        await confirmed_booking(mail_client, second, event.id, (standard.id, 4)),
    ]
    await smtp_sink.wait_for(3)
    response = await mail_client.patch(
        f"/api/events/{event.id}/", json={"status": "cancelled"}, headers=auth(organizer)
    )
    assert response.status_code == 200, response.text

    await smtp_sink.wait_for(6)
    await mail_app.state.outbox.wait_idle()
    await asyncio.sleep(0.3)
    cancelled = [m for m in smtp_sink.messages if m["Subject"] == "Booking cancelled: Open Air"]
    assert len(cancelled) == 3
    by_reference = {b["booking_reference"]: b for b in bookings}
    seen = set()
    for message in cancelled:
        text = text_of(message)
        assert "the organizer cancelled Open Air" in text
        [reference] = [r for r in by_reference if r in text]
        seen.add(reference)
        owner = first if reference != bookings[2]["booking_reference"] else second
        assert message["To"] == owner.email
    assert seen == set(by_reference)


# ------------------------------------------------------------------ password reset


async def test_the_reset_link_in_the_email_sets_a_new_password(
    mail_client: httpx.AsyncClient, smtp_sink: SmtpSink, create_user: Callable[..., Any]
) -> None:
    user = await create_user("attendee")
    response = await mail_client.post(
        "/api/auth/password-reset-request/", json={"email": user.email.upper()}
    )
    assert response.status_code == 202, response.text

    [message] = await smtp_sink.wait_for(1, to=user.email)
    assert message["Subject"] == "Reset your password"
    link = reset_link_in(message)
    assert link in html_of(message)
    response = await mail_client.post(urlsplit(link).path, json={"new_password": NEW_PASSWORD})
    assert response.status_code == 200, response.text

    login = await mail_client.post(
        "/api/auth/login/", json={"username": user.username, "password": NEW_PASSWORD}
    )
    assert login.status_code == 200, login.text
    old = await mail_client.post(
        "/api/auth/login/", json={"username": user.username, "password": TEST_PASSWORD}
    )
    assert old.status_code == 401
    again = await mail_client.post(urlsplit(link).path, json={"new_password": NEW_PASSWORD + "x"})
    assert again.status_code == 422 and again.json()["code"] == "invalid_reset_link"


async def test_no_email_for_an_unknown_address(
    mail_client: httpx.AsyncClient, mail_app: Any, smtp_sink: SmtpSink
) -> None:
    response = await mail_client.post(
        "/api/auth/password-reset-request/", json={"email": "nobody@example.com"}
    )
    assert response.status_code == 202
    await mail_app.state.outbox.wait_idle()
    await asyncio.sleep(0.3)
    assert smtp_sink.messages == []


# ------------------------------------------------------------------ the queue (arq)


async def test_with_redis_the_email_waits_for_the_worker(
    queued: tuple[Any, Callable[[], Worker]],
    smtp_sink: SmtpSink,
    db: Any,
    create_user: Callable[..., Any],
) -> None:
    application, start_worker = queued
    user = await create_user("attendee")
    async with client_for(application) as client:
        response = await client.post(
            "/api/auth/password-reset-request/", json={"email": user.email}
        )
    assert response.status_code == 202

    async with db() as session:
        pending = (
            await session.execute(
                text("SELECT channel, topic, status FROM outbox_messages ORDER BY id")
            )
        ).all()
    assert [tuple(r) for r in pending] == [("email", "password_reset", "pending")]
    await asyncio.sleep(0.3)
    assert smtp_sink.messages == []  # stored, not sent by the API process

    start_worker()
    [message] = await smtp_sink.wait_for(1, to=user.email)
    assert "/password-reset-confirm/" in text_of(message)


async def test_the_worker_retries_when_smtp_fails(
    queued: tuple[Any, Callable[[], Worker]],
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    application, start_worker = queued
    smtp_sink.fail_next = 2
    event, standard, _ = await ticketed_event(db, organizer)
    async with client_for(application) as client:
        booking = await confirmed_booking(client, attendee, event.id, (standard.id, 1))
    start_worker()
    [message] = await smtp_sink.wait_for(1, to=attendee.email, timeout=20)
    assert booking["booking_reference"] in text_of(message)
    assert smtp_sink.fail_next == 0


async def test_with_redis_down_committed_emails_wait_in_the_outbox_and_are_sent(
    database_url: str,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    from tests.redis_server import free_port

    # REDIS_URL names a port nobody answers on: the API takes bookings all the same.
    settings = smtp_settings(database_url, smtp_sink, redis_url=f"redis://127.0.0.1:{free_port()}")
    event, standard, _ = await ticketed_event(db, organizer)
    async for application in running_app(settings):
        async with client_for(application) as client:
            booking = await confirmed_booking(client, attendee, event.id, (standard.id, 1))
            response = await client.post(
                "/api/auth/password-reset-request/", json={"email": attendee.email}
            )
        assert response.status_code == 202
    # The API process is gone; the emails wait in PostgreSQL for whoever sends the outbox.
    dispatcher = Dispatcher(settings, database_url)
    try:
        await dispatcher.run_until_idle()
    finally:
        await dispatcher.close()
    messages = await smtp_sink.wait_for(2, to=attendee.email)
    subjects = sorted(m["Subject"] for m in messages)
    assert subjects == ["Booking confirmed: Jazz <Night> & Co", "Reset your password"]
    assert booking["booking_reference"] in text_of(messages[0]) + text_of(messages[1])


# ------------------------------------------------------------------ delivery


async def test_in_process_delivery_retries_with_backoff(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    smtp_sink.fail_next = 2
    email = Email(
        "password_reset", "zoe@example.com", {"username": "zoe", "link": "x", "expire_minutes": 60}
    )
    sent = await send_with_retries(
        smtp_settings(database_url, smtp_sink), email, first_retry_seconds=0.05
    )
    assert sent
    assert [m["To"] for m in smtp_sink.messages] == ["zoe@example.com"]


async def test_without_smtp_host_the_whole_email_is_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url)
    link = "http://127.0.0.1:8000/api/auth/password-reset-confirm/MQ/abc-123/"
    email = Email(
        "password_reset", "yan@example.com", {"username": "yan", "link": link, "expire_minutes": 60}
    )
    caplog.set_level(logging.INFO, logger="app.notifications")
    assert await send_with_retries(settings, email)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "app.notifications")
    assert link in logged and "yan@example.com" in logged and "Reset your password" in logged


def test_emails_have_a_text_and_an_html_part(database_url: str) -> None:
    message = render(
        make_settings(database_url),
        Email(
            "booking_cancelled",
            "amy@example.com",
            {
                "username": "amy",
                "reference": "ref-1",
                "event_name": "<b>Gig</b>",
                "event_start": "Mon",
                "location": "Here",
                "total": "10.00",
                "items": [{"name": "A", "quantity": 1, "unit_price": "10.00", "amount": "10.00"}],
                "reason": "event_cancelled",
            },
        ),
    )
    assert message.get_content_type() == "multipart/alternative"
    assert "&lt;b&gt;Gig&lt;/b&gt;" in html_of(message)
    assert "the organizer cancelled <b>Gig</b>" in text_of(message)


async def test_with_redis_the_workers_sweep_offers_expired_holds_and_emails_the_offer(
    queued: tuple[Any, Callable[[], Worker]],
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
    create_user: Callable[..., Any],
) -> None:
    """With Redis the web workers do not sweep: the worker's cron job does, and the offer
    its release makes is emailed through the outbox (which the worker sends)."""
    from sqlalchemy import text

    from app.worker import WorkerSettings, shutdown, sweep_holds

    assert any(job.coroutine is sweep_holds for job in WorkerSettings.cron_jobs)
    application, start_worker = queued
    event, standard, _ = await ticketed_event(db, organizer)
    async with db() as s, s.begin():
        await s.execute(
            text("UPDATE ticket_types SET quantity_available = 10 WHERE id = :i"),
            {"i": standard.id},
        )
    waiting = await create_user("attendee")
    async with client_for(application) as client:
        body = {"event_id": event.id, "items": [{"ticket_type_id": standard.id, "quantity": 10}]}
        held = await client.post("/api/holds/", json=body, headers=auth(attendee))
        assert held.status_code == 201, held.text
        joined = await client.post(
            f"/api/events/{event.id}/waitlist/",
            json={"ticket_type_id": standard.id, "quantity": 2},
            headers=auth(waiting),
        )
        assert joined.status_code == 201, joined.text
    async with db() as s, s.begin():
        await s.execute(text("UPDATE holds SET expires_at = now() - interval '1 second'"))
    # The cron job's context: the settings (the offer's email is an outbox row).
    ctx = {"settings": application.state.settings}
    try:
        # Swept here before the worker starts: its own cron sweep would race this one.
        assert await sweep_holds(ctx) == 1
        start_worker()
        assert await sweep_holds(ctx) == 0
    finally:
        await shutdown(ctx)
    [message] = await smtp_sink.wait_for(1, to=waiting.email)
    assert message["Subject"].startswith("Tickets held for you")


async def test_booking_emails_tell_when_and_where_the_event_is(
    mail_client: httpx.AsyncClient,
    smtp_sink: SmtpSink,
    db: Any,
    organizer: User,
    attendee: User,
) -> None:
    start = datetime(2031, 5, 17, 19, 30, tzinfo=UTC)
    event = await make_event(
        db,
        organizer,
        name="Harbour Lights",
        start_time=start,
        end_time=start + timedelta(hours=3),
        location="Pier 7, Hamburg",
    )
    standard = await make_ticket_type(db, event, name="Standard", price=Decimal("25.00"))
    booking = await confirmed_booking(mail_client, attendee, event.id, (standard.id, 1))
    reference = booking["booking_reference"]
    response = await mail_client.put(f"/api/bookings/{reference}/cancel/", headers=auth(attendee))
    assert response.status_code == 200, response.text

    messages = await smtp_sink.wait_for(2, to=attendee.email)
    assert sorted(m["Subject"].split(":")[0] for m in messages) == [
        "Booking cancelled",
        "Booking confirmed",
    ]
    for message in messages:
        text = text_of(message)
        assert "When: Sat 17 May 2031, 19:30 UTC to Sat 17 May 2031, 22:30 UTC" in text, text
        assert "Where: Pier 7, Hamburg" in text, text
        html = html_of(message)
        assert "Sat 17 May 2031, 19:30 UTC" in html and "22:30 UTC" in html
        assert "Pier 7, Hamburg" in html
