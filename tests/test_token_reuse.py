"""An access token verified once is remembered by the process, and still refused in time.

The same token comes with every request of a client; the process keeps what it
verified, but expiry and the account's state are checked on every request.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import text

from app.auth.passwords import password_stamp
from app.core.security import create_token
from tests.conftest import TEST_SECRET_KEY, token_for


async def test_a_token_used_before_is_refused_once_it_expires(client, attendee) -> None:
    # As login issues it (with the password version), but living two seconds.
    token, _ = create_token(
        user_id=attendee.id,
        token_type="access",
        key=TEST_SECRET_KEY,
        lifetime=timedelta(seconds=2),
        extra={"pwv": password_stamp(attendee), "role": attendee.role},
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/users/me/bookings/", headers=headers)).status_code == 200

    await asyncio.sleep(int(time.time()) + 3 - time.time())  # past exp, in whole seconds

    r = await client.get("/api/users/me/bookings/", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"


async def test_a_token_used_before_is_refused_once_its_account_is_deactivated(
    client, db, attendee
) -> None:
    headers = {"Authorization": f"Bearer {token_for(attendee)}"}
    assert (await client.get("/api/users/me/bookings/", headers=headers)).status_code == 200
    async with db() as session:
        await session.execute(
            text("UPDATE users SET is_active = false WHERE id = :id"), {"id": attendee.id}
        )
        await session.commit()

    r = await client.get("/api/users/me/bookings/", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"
