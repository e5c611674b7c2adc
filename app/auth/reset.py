"""Password reset links: the user id in URL-safe base64 and a stateless HMAC token.

The token is `<timestamp base36>-<hmac>` where the HMAC covers the user id, the
password hash, the time of the last password change and the active flag. Setting
a new password (by this link or otherwise) or deactivating the account changes
the signed state, so a link works once and dies with the password it was issued for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from app.auth.models import User
from app.auth.passwords import password_stamp

_SALT = b"app.auth.reset.PasswordResetToken"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_ID = 2**63 - 1  # users.id is a BIGINT


def _now() -> int:
    return int(time.time())


def encode_uid(user_id: int) -> str:
    return base64.urlsafe_b64encode(str(user_id).encode()).rstrip(b"=").decode()


def decode_uid(uidb64: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(uidb64 + "=" * (-len(uidb64) % 4))
        text = raw.decode("ascii")
    except (binascii.Error, ValueError):
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    user_id = int(text)
    return user_id if 0 < user_id <= _MAX_ID else None


def _to_base36(number: int) -> str:
    out = ""
    while True:
        number, digit = divmod(number, 36)
        out = _DIGITS[digit] + out
        if number == 0:
            return out


def _signature(user: User, timestamp: int, secret: str) -> str:
    key = hashlib.sha256(_SALT + secret.encode()).digest()
    message = (
        f"{user.id}|{user.hashed_password}|{password_stamp(user)}|{int(user.is_active)}|{timestamp}"
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[::2]


def make_token(user: User, secret: str) -> str:
    timestamp = _now()
    return f"{_to_base36(timestamp)}-{_signature(user, timestamp, secret)}"


def check_token(user: User, token: str, secret: str, *, max_age_seconds: int) -> bool:
    """True when the token was made for this user's current state and has not expired."""
    ts_b36, sep, signature = token.partition("-")
    if not sep or not signature or not 0 < len(ts_b36) <= 13:
        return False
    if any(char not in _DIGITS for char in ts_b36):
        return False
    timestamp = int(ts_b36, 36)
    if not hmac.compare_digest(signature.encode(), _signature(user, timestamp, secret).encode()):
        return False
    age = _now() - timestamp
    return 0 <= age <= max_age_seconds
