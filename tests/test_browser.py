"""Swagger UI in a real headless Chromium, offline: authorize with a JWT and call the API."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.factories import token_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="no Chromium binary (install Debian's chromium: apt-get install -y chromium)",
)


async def test_swagger_ui_works_offline_with_a_bearer_token(live_server: str, create_user) -> None:
    from playwright.async_api import async_playwright

    user = await create_user("attendee", username="swagger_user")
    token = token_for(user)
    requested: list[str] = []
    blocked: list[str] = []

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = await browser.new_page()

            async def only_local(route) -> None:
                url = route.request.url
                requested.append(url)
                if urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
                    await route.continue_()
                else:
                    blocked.append(url)
                    await route.abort()

            await page.route("**/*", only_local)
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
            status = operation.locator(
                ".live-responses-table tr.response .response-col_status"
            ).first
            await status.wait_for(timeout=20_000)
            assert (await status.inner_text()).strip().startswith("200")
            body = await operation.locator(".live-responses-table .microlight").first.inner_text()
            assert '"swagger_user"' in body
        finally:
            await browser.close()

    assert blocked == [], f"the page tried to reach other hosts: {blocked}"
    assert any("/api/docs/assets/swagger-ui-bundle.js" in url for url in requested)
    assert any("/api/docs/assets/swagger-ui.css" in url for url in requested)
    assert any(url.endswith("/api/schema") for url in requested)
    assert any("/api/auth/profile" in url for url in requested)


async def test_redoc_renders_offline(live_server: str) -> None:
    from playwright.async_api import async_playwright

    blocked: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = await browser.new_page()

            async def only_local(route) -> None:
                if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                    await route.continue_()
                else:
                    blocked.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_local)
            await page.goto(f"{live_server}/api/docs/redoc", wait_until="networkidle")
            await page.locator("h1", has_text="Event Booking API").wait_for(timeout=20_000)
            operation = page.locator("h2", has_text="Book tickets for an event").first
            await operation.wait_for(timeout=20_000)
        finally:
            await browser.close()
    assert blocked == [], blocked
