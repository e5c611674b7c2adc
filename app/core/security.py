"""Password hashing (argon2) and JWTs (HS256)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from anyio import to_thread
from jose import JWTError, jwt
from passlib.context import CryptContext
from prometheus_client import Counter

from app.core.errors import Busy, InvalidToken

T = TypeVar("T")

HASH_REFUSED = Counter(
    "password_hash_refused_total",
    "Password hashes or checks refused with 503 busy: every slot stayed taken",
)

ALGORITHM = "HS256"

# OWASP's Password Storage Cheat Sheet: argon2id with 19 MiB of memory, 2 iterations and
# one lane (its first recommended configuration). Measured on this machine: ~25 ms of
# CPU and 19 MiB per verification (README, "Security"). Hashes made with other
# parameters (passlib's 64 MiB, t=3, p=4 before) still verify.
ARGON2_MEMORY_KIB = 19_456
ARGON2_ITERATIONS = 2
ARGON2_LANES = 1

pwd_context = CryptContext(
    schemes=["argon2"],
    deprecated="auto",
    argon2__type="ID",
    argon2__memory_cost=ARGON2_MEMORY_KIB,
    argon2__rounds=ARGON2_ITERATIONS,
    argon2__parallelism=ARGON2_LANES,
)

# Verified against when the user is unknown, so login takes as long either way.
_DUMMY_HASH = pwd_context.hash("dummy password for timing equalisation")

TokenType = Literal["access", "refresh"]


# Hashing is the cheapest denial of service of a login endpoint: at most one argon2
# computation per core runs at a time in a process; the others wait up to
# HASH_WAIT_SECONDS for a slot, then get 503 busy instead of piling up threads (and
# 19 MiB each) behind them.
HASH_SLOTS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
HASH_WAIT_SECONDS = 2.0
# One semaphore per event loop (a process normally has one; tests may run several).
_hash_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _hash_slots.get(loop)
    if slots is None:
        slots = _hash_slots[loop] = asyncio.Semaphore(HASH_SLOTS or 1)
    return slots


async def _argon2(function: Callable[..., T], *args: Any) -> T:
    slots = _slots()
    try:
        async with asyncio.timeout(HASH_WAIT_SECONDS):
            await slots.acquire()
    except TimeoutError:
        HASH_REFUSED.inc()
        raise Busy("Too many password checks at once; retry in a moment.") from None
    try:
        return await to_thread.run_sync(function, *args)
    finally:
        slots.release()


async def hash_password(password: str) -> str:
    return await _argon2(pwd_context.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; with no hash, still spend the time of a verification."""
    if hashed is None:
        await _argon2(pwd_context.verify, password, _DUMMY_HASH)
        return False
    try:
        return await _argon2(pwd_context.verify, password, hashed)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    type: TokenType
    jti: str
    expires_at: datetime
    family: str | None = None
    role: str | None = None
    password_version: int | None = None
    # Refresh tokens: when the login that started the family happened (unix seconds).
    family_started: int | None = None


def create_token(
    *,
    user_id: int,
    token_type: TokenType,
    key: str,
    lifetime: timedelta,
    jti: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, TokenClaims]:
    now = datetime.now(UTC)
    expires_at = now + lifetime
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "type": token_type,
        "jti": jti or uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    if extra:
        claims.update(extra)
    token = jwt.encode(claims, key, algorithm=ALGORITHM)
    return token, TokenClaims(
        user_id=user_id,
        type=token_type,
        jti=claims["jti"],
        expires_at=expires_at,
        family=claims.get("fam"),
        role=claims.get("role"),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# Access tokens verified by this process: a client sends the same token with every
# request for its lifetime, and verifying it again (base64, JSON, HMAC, claims) is a
# fixed cost of every authenticated request. Keyed by the token, the key and the type;
# a hit only checks the expiry again, as python-jose would (whole seconds, no leeway).
# The account behind it (active, password unchanged) is still checked per request.
VERIFIED_ACCESS_TOKENS_MAX = 8192
_verified_access: dict[tuple[str, str], TokenClaims] = {}


def decode_token(token: str, *, key: str, expected_type: TokenType) -> TokenClaims:
    """Verify signature, algorithm, expiry and type; anything wrong is InvalidToken."""
    if expected_type != "access":
        return _decode_token(token, key=key, expected_type=expected_type)
    cached = _verified_access.get((token, key))
    if cached is not None and int(time.time()) <= cached.expires_at.timestamp():
        return cached
    claims = _decode_token(token, key=key, expected_type=expected_type)
    if VERIFIED_ACCESS_TOKENS_MAX:
        if len(_verified_access) >= VERIFIED_ACCESS_TOKENS_MAX:
            _verified_access.clear()
        _verified_access[(token, key)] = claims
    return claims


def _decode_token(token: str, *, key: str, expected_type: TokenType) -> TokenClaims:
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken()
        payload = jwt.decode(token, key, algorithms=[ALGORITHM])
        if payload.get("type") != expected_type:
            raise InvalidToken()
        return TokenClaims(
            user_id=int(payload["sub"]),
            type=expected_type,
            jti=str(payload["jti"]),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            family=payload.get("fam"),
            role=payload.get("role"),
            password_version=payload.get("pwv"),
            family_started=_int_or_none(payload.get("fst")),
        )
    except (JWTError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken() from exc


def same_origin_policy(*directives: str) -> str:
    """The Content-Security-Policy of pages that load only what this service serves (its
    own scripts, styles, images and fonts, inline ones and data: URLs included) and are
    never framed, with ``directives`` added."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self' 'unsafe-inline'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            *directives,
        )
    )
