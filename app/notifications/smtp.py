"""Handing a message to the SMTP server, or to the log when none is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from app.core.config import Settings
from app.notifications.emails import Email, render, render_text, subject_of

logger = logging.getLogger("app.notifications")

# Failures worth another try later: the server is down, slow, or answered 4xx/5xx.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiosmtplib.SMTPException,
    OSError,
    TimeoutError,
)

SMTP_TIMEOUT_SECONDS = 30
# At most this many SMTP connections send one batch of emails, side by side.
BATCH_CONNECTIONS = 4


async def deliver_email(settings: Settings, email: Email) -> None:
    """Send ``email``. Without SMTP_HOST it goes to the log as text, and no MIME message
    is built: on the booking path without a worker that costs the API's own CPU."""
    if settings.smtp_host:
        await deliver(settings, render(settings, email))
    elif logger.isEnabledFor(logging.INFO):
        logger.info(
            "email (SMTP_HOST is unset, not sent) to=%s from=%s subject=%r\n%s",
            email.to,
            settings.email_from,
            subject_of(email),
            render_text(email),
            extra={"email_to": email.to, "email_subject": subject_of(email)},
        )


async def deliver(settings: Settings, message: EmailMessage) -> None:
    """Send ``message``; without SMTP_HOST, write all of it (links included) to the log."""
    if not settings.smtp_host:
        text = message.get_body(("plain",))
        logger.info(
            "email (SMTP_HOST is unset, not sent) to=%s from=%s subject=%r\n%s",
            message["To"],
            message["From"],
            message["Subject"],
            text.get_content() if text is not None else message.as_string(),
            extra={"email_to": message["To"], "email_subject": message["Subject"]},
        )
        return
    await aiosmtplib.send(message, **_server(settings))
    logger.info("email sent to=%s subject=%r", message["To"], message["Subject"])


def _server(settings: Settings) -> dict[str, Any]:
    """How to reach and log in to SMTP_HOST (aiosmtplib's connection arguments)."""
    # Port 465 speaks TLS from the first byte; other ports upgrade with STARTTLS when asked.
    implicit_tls = settings.smtp_port == 465
    return {
        "hostname": settings.smtp_host,
        "port": settings.smtp_port,
        "username": settings.smtp_username,
        "password": settings.smtp_password,
        "use_tls": implicit_tls,
        "start_tls": False if implicit_tls else settings.smtp_starttls,
        "timeout": SMTP_TIMEOUT_SECONDS,
    }


class NotSent(Exception):
    """An email of a batch that was not handed over (the batch ran out of time)."""


async def deliver_emails(
    settings: Settings, emails: Sequence[Email], *, within_seconds: float
) -> list[Exception | None]:
    """Send ``emails`` within ``within_seconds``; for each, in order, None when it was
    handed over, else the error (NotSent for those the time limit cut off).

    With SMTP_HOST, the batch is shared among at most BATCH_CONNECTIONS connections that
    send side by side, each carrying its share one message after another: connecting,
    TLS and login are paid per connection, not per email. A message the server refuses
    fails alone; a connection that breaks fails the rest of its share. Without
    SMTP_HOST each email goes to the log (``deliver_email``).
    """
    outcomes: list[Exception | None] = [NotSent("no answer in time")] * len(emails)
    if not settings.smtp_host:
        for i, email in enumerate(emails):
            try:
                await deliver_email(settings, email)
                outcomes[i] = None
            except Exception as exc:
                outcomes[i] = exc
        return outcomes
    messages: dict[int, EmailMessage] = {}
    for i, email in enumerate(emails):
        try:
            messages[i] = render(settings, email)
        except Exception as exc:
            outcomes[i] = exc
    order = list(messages)
    count = min(BATCH_CONNECTIONS, len(order))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_seconds):
            await asyncio.gather(
                *(_send_share(settings, messages, order[n::count], outcomes) for n in range(count))
            )
    return outcomes


async def _send_share(
    settings: Settings,
    messages: dict[int, EmailMessage],
    share: list[int],
    outcomes: list[Exception | None],
) -> None:
    """Send the messages ``share`` names over one connection, recording each outcome
    as it is known (a batch cut off by its time limit keeps what was sent)."""
    client = aiosmtplib.SMTP(**_server(settings))
    left = list(share)
    try:
        await client.connect()
        while left:
            message = messages[left[0]]
            try:
                await client.send_message(message)
                outcomes[left[0]] = None
                logger.info("email sent to=%s subject=%r", message["To"], message["Subject"])
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                outcomes[left[0]] = exc  # refused by the server: the connection goes on
            left.pop(0)
    except Exception as exc:  # not connected, or the connection broke
        for i in left:
            outcomes[i] = exc
    finally:
        if client.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 5)
