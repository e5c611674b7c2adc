"""Messages to users; for now written to the log (where email goes without SMTP)."""

from __future__ import annotations

import logging

from app.core.config import Settings

logger = logging.getLogger("app.notifications")


def password_reset_text(*, username: str, link: str, expire_minutes: int) -> str:
    return (
        f"Hello {username},\n\n"
        "Someone asked to reset the password of your Event Booking account.\n"
        f"To choose a new password, open this link within {expire_minutes} minutes:\n\n"
        f"{link}\n\n"
        "The link works once. If you did not ask for this, ignore this message: "
        "your password stays as it is.\n"
    )


async def send_password_reset(settings: Settings, *, email: str, username: str, link: str) -> None:
    """Deliver the password reset link to `email`; runs after the response is sent."""
    body = password_reset_text(
        username=username, link=link, expire_minutes=settings.password_reset_expire_minutes
    )
    logger.info(
        "email to=%s from=%s subject=%r\n%s",
        email,
        settings.email_from,
        "Reset your password",
        body,
        extra={"email_to": email, "email_kind": "password_reset", "link": link},
    )
