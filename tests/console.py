"""Helpers for driving the staff console over HTTP: CSRF tokens, signing in, actions."""

from __future__ import annotations

import re

import httpx

from tests.factories import TEST_PASSWORD

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> httpx.Response:
    """GET the sign-in page (session and token), then POST the form with its token."""
    page = await client.get("/admin/login")
    assert page.status_code == 200, page.text
    return await client.post(
        "/admin/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(page.text)},
    )


async def run_action(
    client: httpx.AsyncClient, identity: str, action: str, pks: list[int]
) -> httpx.Response:
    """The action's confirmation page (GET), then its form posted back (POST)."""
    page = await client.get(
        f"/admin/{identity}/action/{action}", params={"pks": ",".join(map(str, pks))}
    )
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_from(page.text), "pks": [str(pk) for pk in pks]}
    return await client.post(f"/admin/{identity}/{action}", data=data)
