"""Fixtures for webhook tests: a real receiver, and the app sending its outbox itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.factories import asgi_client, make_settings, started_app
from tests.webhook_receiver import Receiver, serve


def hook_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings of an app that sends its outbox, to receivers on loopback, retrying fast."""
    values: dict[str, Any] = {
        "webhook_allow_private_networks": True,
        "outbox_in_process": True,
        "outbox_retry_first_seconds": 0.2,
        "outbox_poll_seconds": 0.05,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
async def hooks_app(database_url: str) -> AsyncIterator[Any]:
    """The app sending its outbox itself, with receivers on loopback allowed."""
    async with started_app(hook_settings(database_url)) as application:
        yield application


@pytest.fixture
async def hooks_client(hooks_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(hooks_app, raise_app_exceptions=False) as c:
        yield c
