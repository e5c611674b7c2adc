"""The staff console at /admin, through HTTP: who signs in, what it shows, what it refuses."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.admin.models import AuditLog
from app.admin.views import VIEWS
from app.auth.models import User
from tests.console import csrf_from, run_action, sign_in
from tests.factories import (
    TEST_PASSWORD,
    auth,
    book,
    client_of,
    confirmed_booking,
    create_user_cli,
    make_event,
    make_settings,
    make_ticket_type,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def staff(create_user: Callable[..., Any]) -> User:
    return await create_user("organizer", username="desk", is_staff=True)


@pytest.fixture
async def console(client: httpx.AsyncClient, staff: User) -> httpx.AsyncClient:
    """The test client, signed in to the console as a staff member."""
    r = await sign_in(client, staff.username)
    assert r.status_code == 302, r.text
    return client


async def _counters(db: async_sessionmaker[AsyncSession], event_id: int) -> tuple[int, ...]:
    async with db() as session:
        row = (
            await session.execute(
                text(
                    "SELECT e.tickets_sold, sum(t.quantity_available), sum(t.quantity_sold) "
                    "FROM events e JOIN ticket_types t ON t.event_id = e.id "
                    "WHERE e.id = :id GROUP BY e.id"
                ),
                {"id": event_id},
            )
        ).one()
    return tuple(row)


async def _audit_rows(db: async_sessionmaker[AsyncSession]) -> list[AuditLog]:
    async with db() as session:
        return list((await session.scalars(select(AuditLog).order_by(AuditLog.id))).all())


async def _booking_id(db: async_sessionmaker[AsyncSession], reference: str) -> int:
    async with db() as session:
        return (
            await session.execute(
                text("SELECT id FROM bookings WHERE booking_reference = :r"), {"r": reference}
            )
        ).scalar_one()


# ---------------------------------------------------------------- signing in


async def test_staff_member_signs_in_with_a_locked_down_session_cookie(
    client: httpx.AsyncClient, staff: User
) -> None:
    r = await sign_in(client, "DESK")  # usernames are case-insensitive, as in the API
    assert r.status_code == 302
    assert r.headers["location"].endswith("/admin/")
    cookie = r.headers["set-cookie"].lower()
    assert "admin_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/admin" in cookie
    assert "secure" not in cookie  # ADMIN_COOKIE_SECURE is off by default

    home = await client.get("/admin/")
    assert home.status_code == 200
    assert "Bookings" in home.text
    assert home.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    assert home.headers["cache-control"] == "no-store"
    # /admin without the slash leads to the console
    bare = await client.get("/admin")
    assert bare.status_code == 302 and bare.headers["location"] == "/admin/"


@pytest.mark.parametrize("role", ["attendee", "organizer"])
async def test_non_staff_account_cannot_sign_in(
    client: httpx.AsyncClient, create_user: Callable[..., Any], role: str
) -> None:
    user = await create_user(role)
    r = await sign_in(client, user.username)
    assert r.status_code == 400
    assert "Invalid credentials" in r.text
    listing = await client.get("/admin/booking/list")
    assert listing.status_code == 302
    assert listing.headers["location"].endswith("/admin/login")


async def test_wrong_password_and_deactivated_staff_cannot_sign_in(
    client: httpx.AsyncClient, create_user: Callable[..., Any]
) -> None:
    await create_user("organizer", username="gone", is_staff=True, is_active=False)
    await create_user("organizer", username="here", is_staff=True)
    assert (await sign_in(client, "gone")).status_code == 400
    assert (await sign_in(client, "here", "Wrong-password-1")).status_code == 400
    assert (await client.get("/admin/")).status_code == 302


async def test_session_ends_when_the_staff_flag_or_password_changes(
    console: httpx.AsyncClient, staff: User, db: async_sessionmaker[AsyncSession]
) -> None:
    assert (await console.get("/admin/user/list")).status_code == 200
    async with db() as session:
        await session.execute(
            text("UPDATE users SET password_changed_at = now() WHERE id = :id"), {"id": staff.id}
        )
        await session.commit()
    r = await console.get("/admin/user/list")
    assert r.status_code == 302 and r.headers["location"].endswith("/admin/login")


async def test_sign_in_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, staff: User
) -> None:
    await client.get("/admin/login")
    r = await client.post("/admin/login", data={"username": "desk", "password": TEST_PASSWORD})
    assert r.status_code == 403
    r = await client.post(
        "/admin/login",
        data={"username": "desk", "password": TEST_PASSWORD, "csrf_token": "forged"},
    )
    assert r.status_code == 403
    assert (await client.get("/admin/")).status_code == 302


async def test_console_sign_in_has_the_login_rate_limits_of_the_api(
    database_url: str, create_user: Callable[..., Any]
) -> None:
    await create_user("organizer", username="limited", is_staff=True)
    async with client_of(make_settings(database_url, rate_limit_enabled=True)) as c:
        for _ in range(5):
            assert (await sign_in(c, "limited", "Wrong-password-1")).status_code == 400
        r = await sign_in(c, "limited", TEST_PASSWORD)
        assert r.status_code == 429
        assert "Too many sign-in attempts" in r.text
        assert int(r.headers["retry-after"]) > 0
        # ...and the API's login counts the same attempts for the same account.
        api = await c.post(
            "/api/auth/login/", json={"username": "limited", "password": TEST_PASSWORD}
        )
        assert api.status_code == 429


async def test_create_user_staff_flag_opens_the_console(
    client: httpx.AsyncClient, database_url: str
) -> None:
    password = "Front-Desk-2031"
    result = create_user_cli(
        "frontdesk",
        "frontdesk@example.com",
        password=password,
        staff=True,
        database_url=database_url,
    )
    assert result.returncode == 0, result.stderr
    assert "created staff organizer 'frontdesk'" in result.stdout
    assert (await sign_in(client, "frontdesk", password)).status_code == 302

    plain = create_user_cli(
        "plainorg", "plainorg@example.com", password=password, database_url=database_url
    )
    assert plain.returncode == 0, plain.stderr
    client.cookies.clear()
    assert (await sign_in(client, "plainorg", password)).status_code == 400


async def test_the_api_cannot_make_anyone_staff(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    r = await client.post(
        "/api/auth/register/",
        json={
            "username": "sneaky",
            "email": "sneaky@example.com",
            "password": "Quiet-Harbor-73",
            "role": "organizer",
            "is_staff": True,
        },
    )
    assert r.status_code == 201, r.text
    assert "is_staff" not in r.json()
    login = await client.post(
        "/api/auth/login/", json={"username": "sneaky", "password": "Quiet-Harbor-73"}
    )
    headers = {"Authorization": f"Bearer {login.json()['access']}"}
    for method in ("PATCH", "PUT"):
        r = await client.request(
            method, "/api/auth/profile/", headers=headers, json={"is_staff": True}
        )
        assert r.status_code == 200, r.text
        assert "is_staff" not in r.json()
    async with db() as session:
        assert await session.scalar(select(User.is_staff).where(User.username == "sneaky")) is False
    assert (await sign_in(client, "sneaky", "Quiet-Harbor-73")).status_code == 400


# ---------------------------------------------------------------- views


@pytest.fixture
async def booked(
    client: httpx.AsyncClient,
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> dict[str, Any]:
    """An event with two ticket types and one booking of 2 + 1 tickets, made through the API."""
    organizer = await create_user("organizer", username="olga")
    attendee = await create_user("attendee", username="ann", email="ann@example.com")
    event = await make_event(db, organizer, name="Jazz night", location="Berlin")
    standard = await make_ticket_type(db, event, name="Standard", quantity_available=10)
    vip = await make_ticket_type(db, event, name="VIP", quantity_available=5)
    booking = await confirmed_booking(client, attendee, event.id, (standard.id, 2), (vip.id, 1))
    return {
        "organizer": organizer,
        "attendee": attendee,
        "event": event,
        "types": (standard, vip),
        "booking": booking,
        "booking_id": await _booking_id(db, booking["booking_reference"]),
    }


async def test_views_list_and_search_the_data(
    console: httpx.AsyncClient, booked: dict[str, Any], db: async_sessionmaker[AsyncSession]
) -> None:
    reference = booked["booking"]["booking_reference"]
    event = booked["event"]
    other = await make_event(db, booked["organizer"], name="Opera gala", location="Wien")

    bookings = await console.get("/admin/booking/list")
    assert bookings.status_code == 200
    assert reference in bookings.text
    assert "ann@example.com" in bookings.text and "Jazz night" in bookings.text
    for term in (reference, reference[:8], "ANN@example", "Jazz", str(event.id)):
        found = await console.get("/admin/booking/list", params={"search": term})
        assert reference in found.text, term
    missing = await console.get("/admin/booking/list", params={"search": "nobody@else"})
    assert reference not in missing.text
    cancelled_only = await console.get("/admin/booking/list", params={"status": "cancelled"})
    assert reference not in cancelled_only.text

    details = await console.get(f"/admin/booking/details/{booked['booking_id']}")
    assert details.status_code == 200
    assert "2 x Standard, 1 x VIP" in details.text

    events = await console.get("/admin/event/list")
    assert "Jazz night" in events.text and "Opera gala" in events.text
    assert "upcoming" in events.text
    searched = await console.get("/admin/event/list", params={"search": "wien"})
    assert "Opera gala" in searched.text and "Jazz night" not in searched.text
    # The API cancels the other event; the status filter sees it.
    r = await console.patch(
        f"/api/events/{other.id}/", headers=auth(booked["organizer"]), json={"status": "cancelled"}
    )
    assert r.status_code == 200, r.text
    cancelled = await console.get("/admin/event/list", params={"status": "cancelled"})
    assert "Opera gala" in cancelled.text and "Jazz night" not in cancelled.text
    upcoming = await console.get("/admin/event/list", params={"status": "upcoming"})
    assert "Jazz night" in upcoming.text and "Opera gala" not in upcoming.text

    types = await console.get("/admin/ticket-type/list", params={"search": "vip"})
    assert "VIP" in types.text and "Standard" not in types.text
    live_types = await console.get("/admin/ticket-type/list", params={"status": "upcoming"})
    assert "VIP" in live_types.text

    users = await console.get("/admin/user/list", params={"search": "ann@"})
    assert "ann@example.com" in users.text and "olga@example.com" not in users.text
    by_name = await console.get("/admin/user/list", params={"search": "olg"})
    assert "olga@example.com" in by_name.text

    audit = await console.get("/admin/audit-log/list")
    assert audit.status_code == 200 and "sign_in" in audit.text


async def test_no_view_shows_a_password_hash_or_offers_a_password_field(
    console: httpx.AsyncClient, booked: dict[str, Any]
) -> None:
    attendee = booked["attendee"]
    pages = [
        "/admin/user/list",
        f"/admin/user/details/{attendee.id}",
        f"/admin/user/edit/{attendee.id}",
        "/admin/user/create",
        "/admin/booking/list",
        f"/admin/booking/details/{booked['booking_id']}",
        "/admin/event/list",
        "/admin/ticket-type/list",
        "/admin/audit-log/list",
    ]
    for page in pages:
        r = await console.get(page)
        assert r.status_code in (200, 403), (page, r.status_code)
        assert "$argon2" not in r.text, page
        assert "hashed_password" not in r.text.lower().replace(" ", "_"), page
        assert 'type="password"' not in r.text, page
    for identity in ("user", "booking", "event", "ticket-type", "audit-log"):
        for kind in ("csv", "json"):
            r = await console.get(f"/admin/{identity}/export/{kind}")
            assert r.status_code == 403, (identity, kind)


async def test_counters_and_statuses_cannot_be_edited_in_the_console(
    console: httpx.AsyncClient, booked: dict[str, Any], db: async_sessionmaker[AsyncSession]
) -> None:
    event = booked["event"]
    standard, _ = booked["types"]
    before = await _counters(db, event.id)
    token = csrf_from((await console.get("/admin/login")).text)
    attempts = [
        (f"/admin/event/edit/{event.id}", {"tickets_sold": "0", "total_capacity": "1"}),
        (f"/admin/ticket-type/edit/{standard.id}", {"quantity_available": "999"}),
        (f"/admin/ticket-type/edit/{standard.id}", {"quantity_sold": "0"}),
        (f"/admin/booking/edit/{booked['booking_id']}", {"status": "cancelled"}),
        (f"/admin/user/edit/{booked['attendee'].id}", {"is_staff": "y"}),
        ("/admin/ticket-type/create", {"event": str(event.id), "quantity_available": "5"}),
        ("/admin/booking/create", {"status": "confirmed"}),
        ("/admin/user/create", {"username": "x", "is_staff": "y"}),
    ]
    for path, form in attempts:
        assert (await console.get(path)).status_code == 403, path
        r = await console.post(path, data={**form, "csrf_token": token})
        assert r.status_code == 403, (path, r.status_code)
    deleted = await console.delete(
        f"/admin/booking/delete?pks={booked['booking_id']}", headers={"X-CSRF-Token": token}
    )
    assert deleted.status_code == 403
    imported = await console.post(
        "/admin/ticket-type/import",
        headers={"X-CSRF-Token": token},
        files={"file": ("t.csv", b"id,quantity_available\n1,999\n")},
    )
    assert imported.status_code == 403
    assert await _counters(db, event.id) == before
    async with db() as session:
        status = await session.scalar(
            text("SELECT status FROM bookings WHERE id = :id"), {"id": booked["booking_id"]}
        )
        staff_count = await session.scalar(text("SELECT count(*) FROM users WHERE is_staff"))
    assert status == "confirmed"
    assert staff_count == 1


# ---------------------------------------------------------------- actions


async def test_cancel_booking_from_the_console_releases_its_tickets_once_and_is_audited(
    console: httpx.AsyncClient,
    booked: dict[str, Any],
    staff: User,
    db: async_sessionmaker[AsyncSession],
) -> None:
    event, reference = booked["event"], booked["booking"]["booking_reference"]
    assert await _counters(db, event.id) == (3, 12, 3)

    # The action's GET only asks: nothing is cancelled yet.
    page = await console.get("/admin/booking/action/cancel", params={"pks": booked["booking_id"]})
    assert page.status_code == 200 and reference in page.text
    assert await _counters(db, event.id) == (3, 12, 3)

    r = await run_action(console, "booking", "cancel", [booked["booking_id"]])
    assert r.status_code == 303
    shown = await console.get(r.headers["location"])
    assert f"Booking {reference} is cancelled." in shown.text
    assert await _counters(db, event.id) == (0, 15, 0)

    # The attendee sees it cancelled through the API.
    mine = await console.get(f"/api/bookings/{reference}/", headers=auth(booked["attendee"]))
    assert mine.json()["status"] == "cancelled"

    # A second cancel from the console is refused by the same rule as the API's (the
    # confirmation page no longer offers it; a stale form posted again is refused).
    stale = await console.get("/admin/booking/action/cancel", params={"pks": booked["booking_id"]})
    assert reference not in stale.text
    again = await console.post(
        "/admin/booking/cancel",
        data={"pks": str(booked["booking_id"]), "csrf_token": csrf_from(stale.text)},
    )
    assert "already cancelled" in (await console.get(again.headers["location"])).text.lower()
    assert await _counters(db, event.id) == (0, 15, 0)
    api_again = await console.put(
        f"/api/bookings/{reference}/cancel/", headers=auth(booked["attendee"])
    )
    assert api_again.status_code == 409

    rows = [row for row in await _audit_rows(db) if row.action == "cancel_booking"]
    assert len(rows) == 1
    assert (rows[0].actor_id, rows[0].actor_username) == (staff.id, "desk")
    assert (rows[0].object_type, rows[0].object_id) == ("booking", reference)
    assert rows[0].before == {"status": "confirmed"}
    assert rows[0].after["status"] == "cancelled" and rows[0].after["cancelled_at"]
    assert rows[0].created_at is not None
    log = await console.get("/admin/audit-log/list")
    assert "cancel_booking" in log.text


async def test_actions_need_the_csrf_token_and_a_post(
    console: httpx.AsyncClient, booked: dict[str, Any], db: async_sessionmaker[AsyncSession]
) -> None:
    event = booked["event"]
    r = await console.post("/admin/booking/cancel", data={"pks": str(booked["booking_id"])})
    assert r.status_code == 403
    r = await console.post(
        "/admin/booking/cancel", data={"pks": str(booked["booking_id"]), "csrf_token": "x"}
    )
    assert r.status_code == 403
    r = await console.post(f"/admin/event/cancel?pks={event.id}")
    assert r.status_code == 403
    # GET on an action's URL never acts.
    assert (await console.get("/admin/booking/cancel")).status_code == 405
    assert (await console.get(f"/admin/event/action/cancel?pks={event.id}")).status_code == 200
    assert await _counters(db, event.id) == (3, 12, 3)
    assert [row.action for row in await _audit_rows(db)] == ["sign_in"]


async def test_staff_need_to_be_signed_in_for_actions(
    client: httpx.AsyncClient, booked: dict[str, Any]
) -> None:
    page = await client.get("/admin/login")
    r = await client.post(
        "/admin/booking/cancel",
        data={"pks": str(booked["booking_id"]), "csrf_token": csrf_from(page.text)},
    )
    assert r.status_code == 302 and r.headers["location"].endswith("/admin/login")


async def test_cancel_event_from_the_console_cancels_its_bookings_like_the_organizer(
    console: httpx.AsyncClient,
    booked: dict[str, Any],
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> None:
    event = booked["event"]
    standard, vip = booked["types"]
    second = await create_user("attendee")
    await confirmed_booking(console, second, event.id, (standard.id, 3))
    assert await _counters(db, event.id) == (6, 9, 6)

    r = await run_action(console, "event", "cancel", [event.id])
    assert r.status_code == 303
    shown = await console.get(r.headers["location"])
    assert "(2 bookings cancelled)" in shown.text
    assert await _counters(db, event.id) == (0, 15, 0)
    detail = await console.get(f"/api/events/{event.id}/")
    assert detail.json()["status"] == "cancelled"
    late = await book(console, second, event.id, (vip.id, 1))
    assert late.status_code == 409 and late.json()["code"] == "event_not_bookable"

    (row,) = [row for row in await _audit_rows(db) if row.action == "cancel_event"]
    assert row.object_id == str(event.id)
    assert row.before["status"] == "upcoming" and row.before["confirmed_bookings"] == 2
    assert row.before["tickets_sold"] == 6
    assert row.after["status"] == "cancelled" and row.after["tickets_sold"] == 0
    assert row.after["confirmed_bookings"] == 0


async def test_deactivate_from_the_console_revokes_tokens_like_the_api(
    console: httpx.AsyncClient,
    staff: User,
    create_user: Callable[..., Any],
    db: async_sessionmaker[AsyncSession],
) -> None:
    user = await create_user("attendee", username="abuser")
    login = await console.post(
        "/api/auth/login/", json={"username": "abuser", "password": TEST_PASSWORD}
    )
    tokens = login.json()
    headers = {"Authorization": f"Bearer {tokens['access']}"}
    assert (await console.get("/api/auth/profile/", headers=headers)).status_code == 200

    r = await run_action(console, "user", "deactivate", [user.id])
    assert r.status_code == 303
    assert "abuser is deactivated." in (await console.get(r.headers["location"])).text

    assert (await console.get("/api/auth/profile/", headers=headers)).status_code == 401
    refreshed = await console.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert refreshed.status_code == 401
    again = await console.post(
        "/api/auth/login/", json={"username": "abuser", "password": TEST_PASSWORD}
    )
    assert again.status_code == 401

    (row,) = [row for row in await _audit_rows(db) if row.action == "deactivate_user"]
    assert (row.actor_id, row.object_type, row.object_id) == (staff.id, "user", str(user.id))
    assert row.before == {"is_active": True} and row.after == {"is_active": False}

    # Staff cannot lock themselves out.
    own = await run_action(console, "user", "deactivate", [staff.id])
    assert "cannot deactivate your own account" in (await console.get(own.headers["location"])).text
    assert (await console.get("/admin/")).status_code == 200


# ---------------------------------------------------------------- offline assets

_ASSET = re.compile(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="([^"]*)"', re.IGNORECASE)


async def test_every_asset_the_console_loads_is_served_by_the_app(
    console: httpx.AsyncClient, booked: dict[str, Any]
) -> None:
    pages = [
        "/admin/",
        "/admin/booking/list",
        f"/admin/booking/details/{booked['booking_id']}",
        f"/admin/booking/action/cancel?pks={booked['booking_id']}",
        "/admin/event/list",
        "/admin/user/list",
        "/admin/audit-log/list",
    ]
    assets: set[str] = set()
    for page in pages:
        r = await console.get(page)
        assert r.status_code == 200, page
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assets.update(_ASSET.findall(r.text))
    console.cookies.clear()
    assets.update(_ASSET.findall((await console.get("/admin/login")).text))
    assert any(url.endswith(".js") for url in assets)
    assert any(url.endswith(".css") for url in assets)
    for url in assets:
        parts = urlsplit(url)
        assert parts.hostname in (None, "testserver"), url
        assert not url.startswith("//"), url
        if url.endswith((".js", ".css")):
            r = await console.get(url)
            assert r.status_code == 200, url
            # the stylesheets' own url(...) references are relative too
            for ref in re.findall(r"url\(([^)]*)\)", r.text):
                ref = ref.strip("'\"")
                assert not ref.startswith(("http:", "https:", "//")), (url, ref)


async def test_session_cookie_is_secure_when_configured(
    database_url: str, create_user: Callable[..., Any]
) -> None:
    await create_user("organizer", username="tls", is_staff=True)
    async with client_of(
        make_settings(database_url, admin_cookie_secure=True), "https://testserver"
    ) as c:
        r = await sign_in(c, "tls")
        assert r.status_code == 302
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


SECRET_COLUMNS = {"hashed_password", "secret", "password", "token", "request_hash"}
COUNTERS = {"tickets_sold", "quantity_available", "quantity_sold", "quantity_held", "status"}


@pytest.mark.parametrize("view", VIEWS, ids=lambda view: view.identity)
async def test_every_view_hides_secrets_and_has_no_form(
    app: Any, console: httpx.AsyncClient, view: type[Any]
) -> None:
    (instance,) = [v for v in app.state.console.views if type(v) is view]
    shown = set(instance._list_prop_names) | set(instance._details_prop_names)
    assert not shown & SECRET_COLUMNS, shown & SECRET_COLUMNS
    assert not (view.can_create or view.can_edit or view.can_delete or view.can_import)
    assert not view.can_export
    # Whatever a form would post, there is no form to post it to.
    token = csrf_from((await console.get("/admin/login")).text)
    for path in (f"/admin/{view.identity}/create", f"/admin/{view.identity}/edit/1"):
        r = await console.post(path, data={**dict.fromkeys(COUNTERS, "0"), "csrf_token": token})
        assert r.status_code == 403, (path, r.status_code)
    r = await console.get(f"/admin/{view.identity}/list")
    assert r.status_code == 200
    assert "$argon2" not in r.text


async def test_odd_input_in_the_console_is_never_a_server_error(
    console: httpx.AsyncClient, booked: dict[str, Any]
) -> None:
    for path in (
        "/admin/booking/details/abc",
        "/admin/booking/details/99999999999999999999",
        "/admin/user/details/-1",
        "/admin/event/details/1.5",
    ):
        assert (await console.get(path)).status_code == 404, path
    for identity in ("booking", "user", "event", "ticket-type", "audit-log"):
        r = await console.get(f"/admin/{identity}/list", params={"search": "a\x00b%_\\"})
        assert r.status_code == 200, identity
    r = await console.get("/admin/booking/action/cancel", params={"pks": "x,99999999999999999999"})
    assert r.status_code == 200
    token = csrf_from(r.text)
    for identity, action in (("booking", "cancel"), ("event", "cancel"), ("user", "deactivate")):
        r = await console.post(
            f"/admin/{identity}/{action}",
            data={"pks": ["abc", "99999999999999999999"], "csrf_token": token},
        )
        assert r.status_code == 303, (identity, r.status_code)


async def test_holds_and_waiting_entries_are_listed_and_searchable(
    console: httpx.AsyncClient, booked: dict[str, Any], create_user: Callable[..., Any]
) -> None:
    event, (_, vip) = booked["event"], booked["types"]
    hold = await console.post(
        "/api/holds/",
        headers=auth(booked["attendee"]),
        json={"event_id": event.id, "items": [{"ticket_type_id": vip.id, "quantity": 2}]},
    )
    assert hold.status_code == 201, hold.text
    reference = hold.json()["hold_reference"]
    # The rest of VIP goes to another attendee; a third one waits for VIP tickets.
    buyer = await create_user("attendee", username="bea")
    await confirmed_booking(console, buyer, event.id, (vip.id, 2))
    waiter = await create_user("attendee", username="walt", email="walt@example.com")
    entry = await console.post(
        f"/api/events/{event.id}/waitlist/",
        headers=auth(waiter),
        json={"ticket_type_id": vip.id, "quantity": 1},
    )
    assert entry.status_code == 201, entry.text

    holds = await console.get("/admin/hold/list")
    assert reference in holds.text and "ann &lt;ann@example.com&gt;" in holds.text
    for term in (reference[:8], "ann@", "Jazz"):
        found = await console.get("/admin/hold/list", params={"search": term})
        assert reference in found.text, term
    assert reference not in (await console.get("/admin/hold/list", params={"search": "walt"})).text
    active = await console.get("/admin/hold/list", params={"status": "active"})
    assert reference in active.text
    assert (
        reference not in (await console.get("/admin/hold/list", params={"status": "expired"})).text
    )

    waiting = await console.get("/admin/waitlist-entry/list", params={"search": "walt@"})
    assert "walt &lt;walt@example.com&gt;" in waiting.text and "waiting" in waiting.text
    nobody = await console.get("/admin/waitlist-entry/list", params={"search": "ann@"})
    assert "walt@example.com" not in nobody.text
    details = await console.get(f"/admin/waitlist-entry/details/{entry.json()['id']}")
    assert details.status_code == 200 and "walt@example.com" in details.text

    types = await console.get("/admin/ticket-type/list")
    assert "Quantity Held" in types.text or "quantity_held" in types.text


async def test_webhook_deliveries_are_listed_without_endpoint_secrets(
    console: httpx.AsyncClient, booked: dict[str, Any], db: async_sessionmaker[AsyncSession]
) -> None:
    created = await console.post(
        "/api/webhooks/",
        headers=auth(booked["organizer"]),
        json={"url": "https://hooks.example.com/in", "event_types": ["booking.cancelled"]},
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    async with db() as session:
        outbox_id = await session.scalar(
            text(
                "INSERT INTO outbox_messages (channel, topic, endpoint_id, payload) "
                "VALUES ('webhook', 'booking.cancelled', :e, '{}'::jsonb) RETURNING id"
            ),
            {"e": created.json()["id"]},
        )
        await session.execute(
            text(
                "INSERT INTO webhook_deliveries (endpoint_id, outbox_message_id, message_id, "
                "event_type, attempt, status_code, error, duration_ms) "
                "VALUES (:e, :o, 'msg_console_1', 'booking.cancelled', 1, 503, 'upstream busy', 12)"
            ),
            {"e": created.json()["id"], "o": outbox_id},
        )
        await session.commit()
    listing = await console.get("/admin/webhook-delivery/list", params={"search": "msg_console"})
    assert listing.status_code == 200
    assert "booking.cancelled" in listing.text and "503" in listing.text
    (delivery_id,) = re.findall(r"/admin/webhook-delivery/details/(\d+)", listing.text)[:1]
    details = await console.get(f"/admin/webhook-delivery/details/{delivery_id}")
    assert "upstream busy" in details.text
    for page in (listing, details):
        assert secret not in page.text
