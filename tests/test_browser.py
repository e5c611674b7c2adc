"""Swagger UI in a real headless Chromium, offline: authorize with a JWT and call the API."""

from __future__ import annotations

from tests.factories import offline_page, requires_chromium, token_for

pytestmark = requires_chromium


async def test_swagger_ui_works_offline_with_a_bearer_token(live_server: str, create_user) -> None:
    user = await create_user("attendee", username="swagger_user")
    token = token_for(user)

    async with offline_page(("data:", "blob:")) as (page, requested, blocked):
        await page.goto(f"{live_server}/api/docs/swagger", wait_until="networkidle")
        await page.wait_for_selector("#operations-auth-auth_profile_read", timeout=20_000)

        # Authorize: paste the access token into the HTTPBearer field.
        await page.click("button.authorize")
        modal = page.locator(".modal-ux")
        await modal.locator("input").first.fill(token)
        await modal.locator("button.authorize").click()
        await modal.locator("button.btn-done").click()

        operation = page.locator("#operations-auth-auth_profile_read")
        await operation.locator(".opblock-summary").first.click()
        await operation.locator("button.try-out__btn").click()
        await operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tr.response .response-col_status").first
        await status.wait_for(timeout=20_000)
        assert (await status.inner_text()).strip().startswith("200")
        body = await operation.locator(".live-responses-table .microlight").first.inner_text()
        assert '"swagger_user"' in body

    assert blocked == [], f"the page tried to reach other hosts: {blocked}"
    assert any("/api/docs/assets/swagger-ui-bundle.js" in url for url in requested)
    assert any("/api/docs/assets/swagger-ui.css" in url for url in requested)
    assert any(url.endswith("/api/schema") for url in requested)
    assert any("/api/auth/profile" in url for url in requested)


async def test_redoc_renders_offline(live_server: str) -> None:
    async with offline_page() as (page, _, blocked):
        await page.goto(f"{live_server}/api/docs/redoc", wait_until="networkidle")
        await page.locator("h1", has_text="Event Booking API").wait_for(timeout=20_000)
        operation = page.locator("h2", has_text="Book tickets for an event").first
        await operation.wait_for(timeout=20_000)
    assert blocked == [], blocked
