"""Webhook endpoints through HTTP: organizers only, their own, the secret once, URL rules."""

from __future__ import annotations

import base64

import httpx
import pytest

from app.auth.models import User
from tests.factories import auth, client_of

URL = "https://hooks.example.com/tickets"


async def subscribe(
    client: httpx.AsyncClient, organizer: User, url: str = URL, types: list[str] | None = None
) -> httpx.Response:
    return await client.post(
        "/api/webhooks/",
        json={"url": url, "event_types": types or ["booking.confirmed"]},
        headers=auth(organizer),
    )


async def test_an_organizer_subscribes_and_sees_the_secret_only_once(
    client: httpx.AsyncClient, organizer: User
) -> None:
    response = await subscribe(client, organizer, types=["booking.confirmed", "event.sold_out"])
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"].endswith(f"/api/webhooks/{created['id']}/")
    assert set(created) == {
        "id",
        "url",
        "event_types",
        "is_active",
        "created_at",
        "updated_at",
        "secret",
    }
    assert created["url"] == URL and created["is_active"] is True
    assert created["event_types"] == ["booking.confirmed", "event.sold_out"]
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"), validate=True)) >= 24

    detail = await client.get(f"/api/webhooks/{created['id']}/", headers=auth(organizer))
    assert detail.status_code == 200
    assert "secret" not in detail.json()
    listed = await client.get("/api/webhooks/", headers=auth(organizer))
    assert listed.status_code == 200
    page = listed.json()
    assert page["count"] == 1 and page["next"] is None
    assert [e["id"] for e in page["results"]] == [created["id"]]
    assert "secret" not in page["results"][0]


async def test_each_endpoint_gets_its_own_secret(
    client: httpx.AsyncClient, organizer: User
) -> None:
    first, second = await subscribe(client, organizer), await subscribe(client, organizer)
    assert first.json()["secret"] != second.json()["secret"]


async def test_an_attendee_is_403_and_anonymous_401(
    client: httpx.AsyncClient, attendee: User
) -> None:
    response = await subscribe(client, attendee)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    listed = await client.get("/api/webhooks/", headers=auth(attendee))
    assert listed.status_code == 403
    anonymous = await client.get("/api/webhooks/")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"


async def test_someone_elses_endpoint_is_404_on_every_route(
    client: httpx.AsyncClient, organizer: User, create_user
) -> None:
    other = await create_user("organizer")
    endpoint = (await subscribe(client, organizer)).json()
    path = f"/api/webhooks/{endpoint['id']}/"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"is_active": False}),
        ("DELETE", path, None),
        ("GET", path + "deliveries/", None),
    ]:
        response = await client.request(method, url, json=body, headers=auth(other))
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["code"] == "not_found"
    assert (await client.get("/api/webhooks/", headers=auth(other))).json()["count"] == 0
    still = await client.get(path, headers=auth(organizer))
    assert still.status_code == 200 and still.json()["is_active"] is True


@pytest.mark.parametrize(
    "types",
    [[], ["booking.created"], ["booking.confirmed", "nope"], "booking.confirmed", None],
)
async def test_event_types_must_be_known_and_not_empty(
    client: httpx.AsyncClient, organizer: User, types: object
) -> None:
    response = await client.post(
        "/api/webhooks/", json={"url": URL, "event_types": types}, headers=auth(organizer)
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert {e["field"].split(".")[1] for e in body["errors"]} == {"event_types"}


async def test_every_event_type_of_the_contract_is_accepted(
    client: httpx.AsyncClient, organizer: User
) -> None:
    types = [
        "booking.confirmed",
        "booking.cancelled",
        "hold.expired",
        "event.cancelled",
        "event.sold_out",
        "waitlist.offered",
    ]
    response = await subscribe(client, organizer, types=[*types, "booking.confirmed"])
    assert response.status_code == 201, response.text
    assert response.json()["event_types"] == types


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_loopback_and_link_local_urls_are_422(
    client: httpx.AsyncClient, organizer: User, url: str
) -> None:
    response = await subscribe(client, organizer, url=url)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert [e["field"] for e in body["errors"]] == ["body.url"]


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https://", "not a url", ""]
)
async def test_urls_must_be_http_or_https(
    client: httpx.AsyncClient, organizer: User, url: str
) -> None:
    response = await subscribe(client, organizer, url=url)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.url"]


async def test_a_private_url_is_refused_on_patch_too(
    client: httpx.AsyncClient, organizer: User
) -> None:
    endpoint = (await subscribe(client, organizer)).json()
    response = await client.patch(
        f"/api/webhooks/{endpoint['id']}/",
        json={"url": "http://127.0.0.1/x"},
        headers=auth(organizer),
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.url"]
    unchanged = await client.get(f"/api/webhooks/{endpoint['id']}/", headers=auth(organizer))
    assert unchanged.json()["url"] == URL


async def test_private_networks_are_allowed_when_the_setting_says_so(
    settings, organizer: User
) -> None:
    async with client_of(settings.model_copy(update={"webhook_allow_private_networks": True})) as c:
        response = await subscribe(c, organizer, url="http://127.0.0.1:9/hook")
    assert response.status_code == 201, response.text


async def test_patch_changes_only_what_is_sent_and_delete_is_204(
    client: httpx.AsyncClient, organizer: User
) -> None:
    endpoint = (await subscribe(client, organizer)).json()
    path = f"/api/webhooks/{endpoint['id']}/"
    response = await client.patch(
        path, json={"event_types": ["event.cancelled"], "is_active": False}, headers=auth(organizer)
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["event_types"] == ["event.cancelled"] and changed["is_active"] is False
    assert changed["url"] == URL and "secret" not in changed
    empty = await client.patch(path, json={"event_types": []}, headers=auth(organizer))
    assert empty.status_code == 422
    moved = await client.patch(
        path, json={"url": "https://other.example.com/h"}, headers=auth(organizer)
    )
    assert moved.json()["url"] == "https://other.example.com/h"
    assert moved.json()["event_types"] == ["event.cancelled"]

    deleted = await client.delete(path, headers=auth(organizer))
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(path, headers=auth(organizer))).status_code == 404
    assert (await client.delete(path, headers=auth(organizer))).status_code == 404


async def test_the_deliveries_log_starts_empty_and_is_paginated(
    client: httpx.AsyncClient, organizer: User
) -> None:
    endpoint = (await subscribe(client, organizer)).json()
    response = await client.get(
        f"/api/webhooks/{endpoint['id']}/deliveries/?page_size=5", headers=auth(organizer)
    )
    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


async def test_the_list_is_paginated_and_only_ones_own(
    client: httpx.AsyncClient, organizer: User, create_user
) -> None:
    other = await create_user("organizer")
    for _ in range(3):
        await subscribe(client, organizer)
    await subscribe(client, other)
    first = await client.get("/api/webhooks/?page_size=2", headers=auth(organizer))
    page = first.json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert "page=2" in page["next"]


async def test_an_unknown_endpoint_id_is_404_and_a_bad_one_422(
    client: httpx.AsyncClient, organizer: User
) -> None:
    assert (await client.get("/api/webhooks/999/", headers=auth(organizer))).status_code == 404
    bad = await client.get("/api/webhooks/abc/", headers=auth(organizer))
    assert bad.status_code == 422
    huge = await client.get(f"/api/webhooks/{2**70}/", headers=auth(organizer))
    assert huge.status_code == 422
