"""Webhook delivery to a real HTTP receiver: signatures, retries, 410, the outbox's guarantees."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from app.auth.models import User
from app.outbox import dispatcher as dispatcher_module
from app.outbox.dispatcher import Dispatcher
from app.outbox.service import record_event
from app.webhooks.schemas import WebhookEventType
from tests.conftest_webhooks import hook_settings
from tests.factories import asgi_client, auth, client_of, make_event, started_app
from tests.webhook_receiver import Receiver


async def subscribe(
    client: httpx.AsyncClient, organizer: User, url: str, *types: WebhookEventType
) -> dict[str, Any]:
    response = await client.post(
        "/api/webhooks/",
        json={"url": url, "event_types": [t.value for t in types] or ["booking.confirmed"]},
        headers=auth(organizer),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def record(
    db: Any, event_id: int, data: dict[str, Any], event_type=WebhookEventType.booking_confirmed
) -> None:
    async with db() as session:
        await record_event(session, event_type, event_id=event_id, data=data)
        await session.commit()


async def deliveries(client: httpx.AsyncClient, organizer: User, endpoint_id: int) -> list[dict]:
    response = await client.get(
        f"/api/webhooks/{endpoint_id}/deliveries/?page_size=100", headers=auth(organizer)
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


async def outbox_rows(db: Any) -> list[Any]:
    async with db() as session:
        return (
            await session.execute(
                text("SELECT channel, topic, status, attempts FROM outbox_messages ORDER BY id")
            )
        ).all()


# ------------------------------------------------------------------ signed delivery


async def test_a_message_arrives_signed_per_standard_webhooks(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"booking_reference": "b-1", "event_id": event.id})

    [request] = await receiver.wait_for(1, timeout=5)
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "booking.confirmed"
    assert payload["data"] == {"booking_reference": "b-1", "event_id": event.id}
    assert payload["timestamp"].endswith("+00:00")
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert request.path == "/hooks"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "QUJD" * 8).verify(request.body, request.headers)

    await asyncio.sleep(0.2)
    [attempt] = await deliveries(hooks_client, organizer, endpoint["id"])
    assert attempt["message_id"] == request.headers["webhook-id"]
    assert attempt["event_type"] == "booking.confirmed"
    assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 200, None)
    assert attempt["next_attempt_at"] is None
    assert [tuple(r) for r in await outbox_rows(db)] == [
        ("webhook", "booking.confirmed", "delivered", 1)
    ]


async def test_only_subscribed_types_of_the_organizers_own_events_are_sent(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, create_user, receiver: Receiver
) -> None:
    other = await create_user("organizer")
    await subscribe(hooks_client, organizer, receiver.url, WebhookEventType.event_cancelled)
    mine, theirs = await make_event(db, organizer), await make_event(db, other)
    await record(db, mine.id, {"n": 1})  # booking.confirmed: not subscribed
    await record(db, theirs.id, {"n": 2}, WebhookEventType.event_cancelled)  # not my event
    await record(db, mine.id, {"n": 3}, WebhookEventType.event_cancelled)
    [request] = await receiver.wait_for(1, timeout=5)
    assert request.json()["data"] == {"n": 3}
    await receiver.stays_at(1)


async def test_every_subscribed_endpoint_gets_its_own_signed_copy(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    first = await subscribe(hooks_client, organizer, receiver.url)
    second = await subscribe(hooks_client, organizer, receiver.url.replace("/hooks", "/other"))
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    requests = await receiver.wait_for(2, timeout=5)
    by_path = {r.path: r for r in requests}
    Webhook(first["secret"]).verify(by_path["/hooks"].body, by_path["/hooks"].headers)
    Webhook(second["secret"]).verify(by_path["/other"].body, by_path["/other"].headers)
    assert by_path["/hooks"].headers["webhook-id"] != by_path["/other"].headers["webhook-id"]


# ------------------------------------------------------------------ retries, 410, disabled


async def test_failures_are_retried_with_backoff_under_the_same_webhook_id(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.answers = [500, 503, 200]
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})

    requests = await receiver.wait_for(3, timeout=10)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    for r in requests:  # each attempt signed anew, each verifiable
        Webhook(endpoint["secret"]).verify(r.body, r.headers)
    first_gap, second_gap = requests[1].at - requests[0].at, requests[2].at - requests[1].at
    # 0.2 s then 0.4 s, each within jitter of +-20 % (plus polling).
    assert first_gap >= 0.15 and second_gap >= 0.3, (first_gap, second_gap)
    await receiver.stays_at(3, 0.8)

    log = await deliveries(hooks_client, organizer, endpoint["id"])
    assert [(d["attempt"], d["status_code"]) for d in log] == [(3, 200), (2, 503), (1, 500)]
    assert log[0]["error"] is None and log[0]["next_attempt_at"] is None
    assert log[1]["error"] == "HTTP 503" and log[1]["next_attempt_at"] is not None
    assert [tuple(r) for r in await outbox_rows(db)] == [
        ("webhook", "booking.confirmed", "delivered", 3)
    ]


async def test_a_message_is_dead_once_its_retry_window_has_passed(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.default = 500
    settings = hook_settings(
        database_url, outbox_in_process=False, outbox_retry_for_hours=0.5 / 3600
    )
    async with started_app(settings) as application:
        async with asgi_client(application, "http://t") as client:
            await subscribe(client, organizer, receiver.url)
        event = await make_event(db, organizer)
        await record(db, event.id, {"n": 1})
        await application.state.outbox.run_until_idle()
        await asyncio.sleep(0.6)
        await application.state.outbox.run_until_idle()
    statuses = [r.status for r in await outbox_rows(db)]
    assert statuses == ["dead"]
    assert 1 <= len(receiver.requests) <= 3


async def test_410_disables_the_endpoint_and_it_gets_nothing_more(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.answers = [410]
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    await receiver.wait_for(1, timeout=5)
    await asyncio.sleep(0.3)

    detail = await hooks_client.get(f"/api/webhooks/{endpoint['id']}/", headers=auth(organizer))
    assert detail.json()["is_active"] is False
    [attempt] = await deliveries(hooks_client, organizer, endpoint["id"])
    assert attempt["status_code"] == 410 and attempt["next_attempt_at"] is None
    await record(db, event.id, {"n": 2})
    await receiver.stays_at(1)
    assert [r.status for r in await outbox_rows(db)] == ["dead"]


async def test_a_disabled_endpoint_gets_nothing_and_re_enabling_does_not_resend(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    path = f"/api/webhooks/{endpoint['id']}/"
    event = await make_event(db, organizer)
    off = await hooks_client.patch(path, json={"is_active": False}, headers=auth(organizer))
    assert off.status_code == 200
    await record(db, event.id, {"n": 1})
    await receiver.stays_at(0)
    on = await hooks_client.patch(path, json={"is_active": True}, headers=auth(organizer))
    assert on.json()["is_active"] is True
    await receiver.stays_at(0)
    await record(db, event.id, {"n": 2})
    [request] = await receiver.wait_for(1, timeout=5)
    assert request.json()["data"] == {"n": 2}


async def retrying_message(
    client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> dict[str, Any]:
    """An endpoint whose receiver answers 500, with one message sent to it once and now
    waiting for its retry."""
    receiver.default = 500
    endpoint = await subscribe(client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    await receiver.wait_for(1, timeout=5)
    return endpoint


async def test_messages_waiting_for_a_retry_are_skipped_once_the_endpoint_is_disabled(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    endpoint = await retrying_message(hooks_client, db, organizer, receiver)
    off = await hooks_client.patch(
        f"/api/webhooks/{endpoint['id']}/", json={"is_active": False}, headers=auth(organizer)
    )
    assert off.status_code == 200
    await asyncio.sleep(1.0)
    count = len(receiver.requests)
    await receiver.stays_at(count, 0.8)
    assert [r.status for r in await outbox_rows(db)] == ["skipped"]


async def test_deleting_an_endpoint_drops_its_messages(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    endpoint = await retrying_message(hooks_client, db, organizer, receiver)
    gone = await hooks_client.delete(f"/api/webhooks/{endpoint['id']}/", headers=auth(organizer))
    assert gone.status_code == 204
    assert await outbox_rows(db) == []
    count = len(receiver.requests)
    await receiver.stays_at(count, 0.8)


# ------------------------------------------------------------------ how it is sent


async def test_redirects_are_not_followed(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.answers = [302]
    receiver.headers = {"Location": receiver.url.replace("/hooks", "/elsewhere")}
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    requests = await receiver.wait_for(2, timeout=5)  # the retry, not the redirect
    assert [r.path for r in requests] == ["/hooks", "/hooks"]
    log = await deliveries(hooks_client, organizer, endpoint["id"])
    first = log[-1]
    assert first["status_code"] == 302 and "redirect" in first["error"]


async def test_the_address_is_checked_again_when_sending(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    # Saved while private networks were allowed; sent by a dispatcher that refuses them.
    async with client_of(
        hook_settings(database_url, outbox_in_process=False), "http://t"
    ) as client:
        endpoint = await subscribe(client, organizer, receiver.url)
        event = await make_event(db, organizer)
        await record(db, event.id, {"n": 1})
        strict = Dispatcher(
            hook_settings(database_url, webhook_allow_private_networks=False), database_url
        )
        try:
            assert await strict.dispatch_due() == 1
        finally:
            await strict.close()
        [attempt] = await deliveries(client, organizer, endpoint["id"])
    assert receiver.requests == []
    assert attempt["status_code"] is None
    assert "127.0.0.1" in attempt["error"] and "private" in attempt["error"]


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    hooks_client: httpx.AsyncClient,
    db: Any,
    organizer: User,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatcher_module, "WEBHOOK_TIMEOUT_SECONDS", 0.3)
    receiver.delay = 1.0
    endpoint = await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    await receiver.wait_for(1, timeout=5)
    await asyncio.sleep(0.5)
    log = await deliveries(hooks_client, organizer, endpoint["id"])
    assert log[-1]["status_code"] is None and "no answer within" in log[-1]["error"]


# ------------------------------------------------------------------ concurrency


async def test_two_dispatchers_never_send_one_message_twice(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.delay = 0.05
    async with client_of(
        hook_settings(database_url, outbox_in_process=False), "http://t"
    ) as client:
        await subscribe(client, organizer, receiver.url)
    event = await make_event(db, organizer)
    for n in range(60):
        await record(db, event.id, {"n": n})

    settings = hook_settings(database_url, outbox_in_process=False)
    dispatchers = [Dispatcher(settings, database_url, batch_size=5) for _ in range(2)]
    try:
        await asyncio.gather(*(d.run_until_idle() for d in dispatchers))
    finally:
        await asyncio.gather(*(d.close() for d in dispatchers))

    ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert len(ids) == 60 and set(ids.values()) == {1}
    assert sorted(r.json()["data"]["n"] for r in receiver.requests) == list(range(60))
    rows = await outbox_rows(db)
    assert {(r.status, r.attempts) for r in rows} == {("delivered", 1)}
    async with db() as session:
        logged = await session.scalar(text("SELECT count(*) FROM webhook_deliveries"))
    assert logged == 60


async def test_a_message_left_by_a_dispatcher_that_died_is_sent_after_its_lease(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    settings = hook_settings(database_url, outbox_in_process=False)
    async with started_app(settings) as application, asgi_client(application, "http://t") as client:
        await subscribe(client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})
    # A dispatcher takes the message and dies before sending (its lease: 0.5 s).
    async with db() as session:
        await session.execute(
            text(
                "UPDATE outbox_messages SET attempts = 1, "
                "next_attempt_at = now() + interval '0.5 seconds'"
            )
        )
        await session.commit()
    survivor = Dispatcher(settings, database_url)
    try:
        assert await survivor.dispatch_due() == 0  # still leased
        await asyncio.sleep(0.6)
        assert await survivor.dispatch_due() == 1
    finally:
        await survivor.close()
    [request] = receiver.requests
    assert request.json()["data"] == {"n": 1}
    assert [tuple(r)[2:] for r in await outbox_rows(db)] == [("delivered", 2)]


# ------------------------------------------------------------------ the transaction


async def test_a_rolled_back_change_leaves_no_message(
    hooks_client: httpx.AsyncClient, db: Any, organizer: User, receiver: Receiver
) -> None:
    await subscribe(hooks_client, organizer, receiver.url)
    event = await make_event(db, organizer)
    async with db() as session:
        await record_event(
            session, WebhookEventType.booking_confirmed, event_id=event.id, data={"n": 1}
        )
        assert len(await outbox_rows(db)) == 0  # not visible before commit
        await session.rollback()
    assert await outbox_rows(db) == []
    await receiver.stays_at(0)


async def test_metrics_show_the_outbox_depth_and_attempts_by_result(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    receiver.answers = [500]
    async with (
        started_app(hook_settings(database_url, outbox_in_process=False)) as application,
        asgi_client(application, "http://t") as client,
    ):
        await subscribe(client, organizer, receiver.url)
        event = await make_event(db, organizer)
        await record(db, event.id, {"n": 1})
        waiting = (await client.get("/metrics")).text
        assert 'outbox_pending_messages{channel="webhook"} 1.0' in waiting
        assert await application.state.outbox.dispatch_due() == 1  # the 500
        await asyncio.sleep(0.3)
        await application.state.outbox.run_until_idle()
        done = (await client.get("/metrics")).text
    assert 'outbox_pending_messages{channel="webhook"} 0.0' in done
    assert 'outbox_attempts_total{channel="webhook",result="retry"}' in done
    assert 'outbox_attempts_total{channel="webhook",result="delivered"}' in done


DISPATCHER_SCRIPT = """
import asyncio, os
from app.core.config import Settings
from app.outbox.dispatcher import Dispatcher

async def main():
    settings = Settings(_env_file=None)
    dispatcher = Dispatcher(settings, settings.database_url, lease_seconds=1.0)
    dispatcher.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_dispatcher_killed_mid_delivery_leaves_the_message_to_the_next(
    database_url: str, db: Any, organizer: User, receiver: Receiver
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.factories import ROOT

    receiver.delay = 2.0  # the first dispatcher is killed while the receiver still reads
    settings = hook_settings(database_url, outbox_in_process=False)
    async with started_app(settings) as application, asgi_client(application, "http://t") as client:
        await subscribe(client, organizer, receiver.url)
    event = await make_event(db, organizer)
    await record(db, event.id, {"n": 1})

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-c", DISPATCHER_SCRIPT], cwd=ROOT, env=env)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not receiver.requests and receiver.in_flight == 0:
            assert asyncio.get_running_loop().time() < deadline, "never delivered"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    async with db() as session:
        row = (await session.execute(text("SELECT status, attempts FROM outbox_messages"))).one()
    assert tuple(row) == ("pending", 1)  # taken, never finished

    receiver.delay = 0.0
    survivor = Dispatcher(settings, database_url)
    try:
        await asyncio.sleep(1.1)  # the dead dispatcher's lease
        await survivor.run_until_idle()
    finally:
        await survivor.close()
    await asyncio.sleep(2.0)  # the killed attempt's request finishes on the receiver's side
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1 and len(receiver.requests) == 2  # at least once: the same message
    assert [r.status for r in await outbox_rows(db)] == ["delivered"]
