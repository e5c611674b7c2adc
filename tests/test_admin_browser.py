"""The staff console in a real headless Chromium with the network closed: only the app answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.factories import (
    ROOT,
    TEST_PASSWORD,
    auth,
    book,
    make_event,
    make_ticket_type,
    offline_page,
    requires_chromium,
)

pytestmark = requires_chromium

# `UPDATE_SCREENSHOTS=1 make test` refreshes the README's picture of the console.
SCREENSHOT = ROOT / "docs" / "admin-console.png"


async def test_staff_finds_a_booking_by_reference_and_cancels_it_offline(
    live_server: str, create_user: Any, db: Any, tmp_path: Path
) -> None:
    await create_user("organizer", username="desk", is_staff=True)
    organizer = await create_user("organizer")
    attendee = await create_user("attendee", username="ann", email="ann@example.com")
    event = await make_event(db, organizer, name="Jazz night")
    standard = await make_ticket_type(db, event, name="Standard", quantity_available=10)
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as api:
        booked = await book(api, attendee, event.id, (standard.id, 3))
        assert booked.status_code == 201, booked.text
        reference = booked.json()["booking_reference"]

        viewport = {"width": 1400, "height": 900}
        async with offline_page(("data:",), viewport=viewport) as (page, requested, blocked):
            # A non-staff account is turned away at the sign-in form.
            await page.goto(f"{live_server}/admin/", wait_until="networkidle")
            await page.fill("input[name=username]", "ann")
            await page.fill("input[name=password]", TEST_PASSWORD)
            await page.click("button[type=submit]")
            await page.locator(".invalid-feedback").first.wait_for(timeout=20_000)
            assert "/admin/login" in page.url

            await page.fill("input[name=username]", "desk")
            await page.fill("input[name=password]", TEST_PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{live_server}/admin/", timeout=20_000)

            await page.goto(f"{live_server}/admin/booking/list", wait_until="networkidle")
            await page.fill("#search-input", reference)
            await page.click("#search-button")
            await page.wait_for_url("**search=*", timeout=20_000)
            row = page.locator("tbody tr", has_text=reference)
            await row.wait_for(timeout=20_000)
            assert await page.locator("tbody tr").count() == 1
            if os.environ.get("UPDATE_SCREENSHOTS"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT))
            await page.screenshot(path=str(tmp_path / "bookings.png"))

            await row.locator("a[href*='/admin/booking/details/']").first.click()
            await page.wait_for_url("**/admin/booking/details/**", timeout=20_000)
            await page.get_by_role("link", name="Cancel booking").click()
            await page.wait_for_url("**/admin/booking/action/cancel**", timeout=20_000)
            assert reference in await page.locator("#confirm-objects").inner_text()
            await page.click("#confirm-submit")
            await page.wait_for_url("**/admin/booking/details/**", timeout=20_000)
            await page.get_by_text(f"Booking {reference} is cancelled.").wait_for(timeout=20_000)

        assert blocked == [], f"the console tried to reach other hosts: {blocked}"
        assert any("/admin/statics/js/" in url for url in requested)
        assert any("/admin/statics/css/" in url for url in requested)

        # Through the API: the booking is cancelled and its 3 tickets came back once.
        mine = await api.get(f"/api/bookings/{reference}/", headers=auth(attendee))
        assert mine.json()["status"] == "cancelled"
        detail = (await api.get(f"/api/events/{event.id}/")).json()
        assert detail["tickets_sold"] == 0
        assert detail["ticket_types"][0]["quantity_available"] == 10
        assert detail["ticket_types"][0]["quantity_sold"] == 0

    async with db() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT actor_username, object_id, before, after FROM audit_log "
                    "WHERE action = 'cancel_booking'"
                )
            )
        ).all()
    assert len(rows) == 1
    assert rows[0].actor_username == "desk" and rows[0].object_id == reference
    assert rows[0].before == {"status": "confirmed"} and rows[0].after["status"] == "cancelled"
