"""Handing a message to the SMTP server, or to the log when none is configured."""

from __future__ import annotations

import logging
from email.message import EmailMessage

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
    # Port 465 speaks TLS from the first byte; other ports upgrade with STARTTLS when asked.
    implicit_tls = settings.smtp_port == 465
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        use_tls=implicit_tls,
        start_tls=False if implicit_tls else settings.smtp_starttls,
        timeout=SMTP_TIMEOUT_SECONDS,
    )
    logger.info("email sent to=%s subject=%r", message["To"], message["Subject"])
