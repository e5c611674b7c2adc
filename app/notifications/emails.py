"""The emails the service sends: what each carries, and rendering it to a MIME message."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.core.config import Settings

EmailKind = Literal["booking_confirmed", "booking_cancelled", "password_reset", "waitlist_offered"]

TEMPLATES = Path(__file__).parent / "templates"

SUBJECTS: dict[str, str] = {
    "booking_confirmed": "Booking confirmed: {event_name}",
    "booking_cancelled": "Booking cancelled: {event_name}",
    "password_reset": "Reset your password",
    "waitlist_offered": "Tickets held for you: {event_name}",
}


@dataclass(frozen=True, repr=False)
class Email:
    """One email to send: its kind (the template), recipient and template values.

    ``context`` holds plain values only (strings, numbers, lists, dicts) so the
    email can be queued and sent by another process without the database.
    ``job_id`` makes a queued email unique: enqueuing it twice sends it once.
    """

    kind: EmailKind
    to: str
    context: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None

    def __repr__(self) -> str:
        # The worker logs job arguments: keep recipients and reset links out of the logs.
        return f"<Email {self.kind}>"


@lru_cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        # The templates ship with the code: no stat() of the file at every render.
        auto_reload=False,
    )


def subject_of(email: Email) -> str:
    return SUBJECTS[email.kind].format(**email.context)


def render_text(email: Email) -> str:
    """The plain-text part alone (what the log shows when no SMTP server is configured)."""
    values = {**email.context, "subject": subject_of(email)}
    return _environment().get_template(f"{email.kind}.txt").render(values)


def render(settings: Settings, email: Email) -> EmailMessage:
    """The email as a multipart/alternative message: plain text, then HTML."""
    env = _environment()
    subject = subject_of(email)
    values = {**email.context, "subject": subject}
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.email_from
    message["To"] = email.to
    message["Message-ID"] = make_msgid(domain=_domain(settings.email_from))
    message.set_content(env.get_template(f"{email.kind}.txt").render(values))
    message.add_alternative(env.get_template(f"{email.kind}.html").render(values), subtype="html")
    return message


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip(" >") or "localhost"
