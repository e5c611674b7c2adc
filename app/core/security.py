"""Password hashing (argon2) and JWTs (HS256)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from anyio import to_thread
from jose import JWTError, jwt
from passlib.context import CryptContext

from app.core.errors import InvalidToken

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


async def hash_password(password: str) -> str:
    return await to_thread.run_sync(pwd_context.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; with no hash, still spend the time of a verification."""
    if hashed is None:
        await to_thread.run_sync(pwd_context.verify, password, _DUMMY_HASH)
        return False
    try:
        return await to_thread.run_sync(pwd_context.verify, password, hashed)
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


def decode_token(token: str, *, key: str, expected_type: TokenType) -> TokenClaims:
    """Verify signature, algorithm, expiry and type; anything wrong is InvalidToken."""
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
        )
    except (JWTError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken() from exc
