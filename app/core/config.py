"""Settings read from the environment (and an optional .env file), validated once."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger("app.config")

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting of the service; names are case-insensitive environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", case_sensitive=False, extra="ignore"
    )

    database_url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://user:pass@host:port/db; unset starts an embedded server.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="A read replica for anonymous catalogue reads; unset: the primary only.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; unset: in-process fallbacks."
    )
    secret_key: str | None = Field(default=None, min_length=16)
    access_token_expire_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_expire_days: int = Field(default=7, ge=1, le=365)
    password_reset_expire_minutes: int = Field(default=60, ge=1)
    max_tickets_per_booking: int = Field(default=10, ge=1, le=1000)
    lock_timeout_ms: int = Field(default=5000, ge=1)
    # "pgbouncer": DATABASE_URL is a PgBouncer in transaction mode (no prepared statements
    # across transactions, session settings applied per transaction).
    db_pooler: Literal["none", "pgbouncer"] = "none"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit_enabled: bool = True
    # Limits in the `limits` notation ("5/minute", "100/hour"). Per-address limits are
    # generous because many clients can share one address (offices, NAT, proxies).
    rate_limit_login: str = "5/minute"
    rate_limit_login_ip: str = "60/minute"
    rate_limit_register: str = "1000/hour"
    rate_limit_password_reset: str = "5/hour"  # noqa: S105 - a rate, not a secret
    rate_limit_password_reset_ip: str = "100/hour"  # noqa: S105 - a rate, not a secret
    rate_limit_bookings: str = "600/minute"
    rate_limit_change_password: str = "5/minute"  # noqa: S105 - a rate, not a secret
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    email_from: str = "Event Booking <no-reply@localhost>"
    password_reset_url: str | None = Field(
        default=None, description="Template with {uidb64} and {token}; default: the API's endpoint."
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base of absolute links (pagination, Location, emails); unset: the request's.",
    )
    # Small on purpose: a request holds its connection only for its statements, and
    # queueing in the pool is cheaper than a convoy of backends on one hot row
    # (make bench: hot event 470 bookings/s with 20 per worker, 589 with 4).
    db_pool_size: int = Field(default=5, ge=1, le=500)
    db_max_overflow: int = Field(default=0, ge=0, le=500)
    db_pool_timeout: float = Field(default=30.0, gt=0)
    # Every statement of a request is cancelled past this (503 busy): no query holds a
    # connection for minutes. Maintenance tasks and migrations are not bound by it.
    statement_timeout_ms: int = Field(default=5000, ge=100)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Peers (addresses or networks) whose X-Forwarded-For is believed.",
    )
    metrics_token: str | None = Field(default=None, min_length=16)
    refresh_family_max_days: int = Field(default=30, ge=1, le=3650)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    data_dir: Path = PROJECT_ROOT / ".data"
    idempotency_key_ttl_hours: int = Field(default=24, ge=24)
    # Webhooks and the outbox.
    webhook_allow_private_networks: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback, private and link-local addresses.",
    )
    outbox_in_process: bool | None = Field(
        default=None,
        description=(
            "Send outbox messages from the API process; unset: yes without REDIS_URL "
            "(with it, `python -m app worker` sends them)."
        ),
    )
    outbox_retry_first_seconds: float = Field(default=5.0, gt=0)
    outbox_retry_for_hours: float = Field(default=24.0, gt=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    outbox_retention_hours: int = Field(default=168, ge=1)
    # Holds: how long tickets stay off sale for checkout, and for an offer to a waiting entry.
    hold_ttl_seconds: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    waitlist_offer_ttl_seconds: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    # How often expired holds are swept back on sale (the contract: within 10 s).
    hold_sweep_interval_seconds: float = Field(default=5.0, gt=0, le=10)
    # The staff console's session cookie: sent over HTTPS only when true (set it
    # behind a TLS-terminating proxy); a console session lasts this many minutes.
    admin_cookie_secure: bool = False
    admin_session_minutes: int = Field(default=8 * 60, ge=1, le=7 * 24 * 60)

    @property
    def dispatches_in_process(self) -> bool:
        """Whether the API process sends the outbox's messages itself."""
        if self.outbox_in_process is not None:
            return self.outbox_in_process
        return self.redis_url is None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [
                ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
            ]
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("postgresql+asyncpg://", "postgresql://", "postgres://")):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return "postgresql+asyncpg://" + value.split("://", 1)[1]

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("password_reset_url")
    @classmethod
    def _check_reset_url(cls, value: str | None) -> str | None:
        if value and ("{uidb64}" not in value or "{token}" not in value):
            raise ValueError("must contain {uidb64} and {token}")
        return value or None

    @property
    def signing_key(self) -> str:
        return self.secret_key or _generated_secret_key(self.data_dir)


@lru_cache
def _generated_secret_key(data_dir: Path) -> str:
    """A random key when SECRET_KEY is unset, shared by the worker processes of one machine.

    Kept in the data directory (mode 0600) so that tokens issued by one worker are
    accepted by the others; set SECRET_KEY in production.
    """
    logger.warning("SECRET_KEY is not set: using a generated key (set SECRET_KEY in production)")
    path = data_dir / "secret_key"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create_atomically(path, secrets.token_urlsafe(48))
        key = path.read_text(encoding="utf-8").strip()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    logger.warning(
        "the generated SECRET_KEY could not be kept in %s: tokens of this "
        "process will not work in others",
        path,
    )
    return secrets.token_urlsafe(48)


def _create_atomically(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` unless it exists, never showing a half-written file.

    Workers starting together all try: each writes a temporary file in full, then
    hard-links it to the final name, which succeeds for exactly one of them; the
    others read the winner's key.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another worker won: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_settings() -> Settings:
    """Read the settings, or stop the process with a message naming the invalid setting."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        print("Invalid settings:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
