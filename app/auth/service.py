"""Auth rules: accounts, logins, rotating refresh tokens, password changes and resets."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from fastapi import BackgroundTasks
from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import reset
from app.auth.models import RefreshToken, User
from app.auth.passwords import check_password, password_stamp
from app.auth.schemas import (
    ChangePassword,
    Login,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    RefreshRequest,
    TokenPair,
    UserRegister,
)
from app.core.config import Settings
from app.core.db import UnitOfWork
from app.core.errors import (
    AppError,
    EmailTaken,
    InvalidCredentials,
    InvalidResetLink,
    InvalidToken,
    UsernameTaken,
    ValidationFailed,
    WrongPassword,
)
from app.core.security import (
    TokenClaims,
    create_token,
    decode_token,
    hash_password,
    verify_password,
)
from app.notifications import service as notifications

logger = logging.getLogger("app.auth")

_UNIQUE_ERRORS: dict[str, type[AppError]] = {
    "uq_users_username_lower": UsernameTaken,
    "uq_users_email": EmailTaken,
}


# --- accounts ---------------------------------------------------------------------------


async def register(uow: UnitOfWork, data: UserRegister) -> User:
    check_password(data.password, username=data.username, email=data.email, field="body.password")
    hashed = await hash_password(data.password)
    user = User(
        username=data.username,
        email=data.email.lower(),
        hashed_password=hashed,
        role=data.role.value,
        is_active=True,
    )
    async with uow:
        await _ensure_available(uow.session, username=user.username, email=user.email)
        uow.session.add(user)
        await _flush_unique(uow.session)
    return user


async def update_profile(uow: UnitOfWork, user: User, data: ProfileUpdate) -> User:
    """Change username and/or email; fields left out (or null) keep their value."""
    username = data.username
    email = data.email.lower() if data.email is not None else None
    if username is None and email is None:
        return user
    if email is not None and email != user.email:
        # Re-authentication: with the email, whoever holds a stolen access token would
        # also receive the next password reset link.
        if data.current_password is None:
            raise ValidationFailed(
                "current_password is needed to change the email.", field="body.current_password"
            )
        if not await verify_password(data.current_password, user.hashed_password):
            raise WrongPassword("The current password is not correct.")
    async with uow:
        current = await _lock_user(uow.session, user.id)
        if current is None:
            raise InvalidToken()
        await _ensure_available(uow.session, username=username, email=email, exclude_id=user.id)
        if username is not None:
            current.username = username
        if email is not None:
            current.email = email
        await _flush_unique(uow.session)
    return current


async def deactivate_own_account(uow: UnitOfWork, user: User, password: str) -> None:
    """The user closes their account: only with the password (not a stolen token alone)."""
    if not await verify_password(password, user.hashed_password):
        raise WrongPassword("The password is not correct.")
    await deactivate(uow, user)


async def deactivate(uow: UnitOfWork, user: User) -> None:
    """Deactivate the account: refresh tokens are revoked and access tokens stop working."""
    async with uow:
        current = await _lock_user(uow.session, user.id)
        if current is None:
            return
        current.is_active = False
        await _revoke(uow.session, RefreshToken.user_id == user.id)


async def _ensure_available(
    session: AsyncSession,
    *,
    username: str | None = None,
    email: str | None = None,
    exclude_id: int | None = None,
) -> None:
    """Report a taken username before a taken email. The unique indexes stay the real guard."""
    others = User.id != exclude_id if exclude_id is not None else True
    if username is not None and await session.scalar(
        select(exists().where(func.lower(User.username) == func.lower(username), others))
    ):
        raise UsernameTaken()
    if email is not None and await session.scalar(
        select(exists().where(User.email == email, others))
    ):
        raise EmailTaken()


async def _flush_unique(session: AsyncSession) -> None:
    """Flush, turning a unique index violation (a concurrent request won) into its 409."""
    try:
        await session.flush()
    except IntegrityError as exc:
        error = _UNIQUE_ERRORS.get(_constraint_name(exc) or "")
        if error is None:
            raise
        raise error() from exc


def _constraint_name(exc: BaseException) -> str | None:
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            break
        name = getattr(current, "constraint_name", None)
        if isinstance(name, str):
            return name
        current = getattr(current, "orig", None) or current.__cause__
    text = str(exc)
    return next((name for name in _UNIQUE_ERRORS if f'"{name}"' in text), None)


async def _lock_user(session: AsyncSession, user_id: int) -> User | None:
    """Lock the user row before touching their tokens or password.

    Every transaction that changes a user's refresh tokens or password takes this lock
    first, so they run one at a time per user and always lock users before tokens.
    FOR NO KEY UPDATE leaves foreign-key checks (bookings, events) unblocked.
    """
    return await session.scalar(
        select(User).where(User.id == user_id).with_for_update(key_share=True)
    )


# --- tokens -----------------------------------------------------------------------------


async def authenticate(uow: UnitOfWork, identifier: str, password: str) -> User:
    """The active account of a username or email and its password, else InvalidCredentials.

    Unknown accounts, wrong passwords and deactivated accounts look alike (and cost
    the same hash check). Used by the API's login and the staff console's sign-in.
    """
    identifier = identifier.strip()
    # lower() on both sides, as in the unique index: PostgreSQL's idea of case applies.
    same_username = func.lower(User.username) == func.lower(identifier)
    async with uow:
        user = await uow.session.scalar(
            select(User)
            .where(or_(same_username, User.email == identifier.lower()))
            # A username that looks like someone else's email wins over that email.
            .order_by(same_username.desc())
            .limit(1)
        )
    # The hash is checked outside the transaction: no connection is held for ~0.1 s.
    valid = await verify_password(password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active:
        raise InvalidCredentials()
    return user


async def login(uow: UnitOfWork, data: Login, settings: Settings) -> TokenPair:
    """Tokens for a username or email and password; unknown, wrong and inactive look alike."""
    user = await authenticate(uow, data.username, data.password)
    async with uow:
        # A password change or deactivation committed during the check revoked every
        # refresh token; a token stored now would outlive it.
        current = await _lock_user(uow.session, user.id)
        changed = current is None or current.hashed_password != user.hashed_password
        if changed or not current.is_active:
            raise InvalidCredentials()
        return await _issue_tokens(
            uow.session, current, settings, family_id=uuid.uuid4(), family_started=datetime.now(UTC)
        )


async def refresh(uow: UnitOfWork, data: RefreshRequest, settings: Settings) -> TokenPair:
    """Rotate a refresh token: it is spent and a new pair of the same family is issued.

    A token that was already spent means two parties hold it (one of them stole it):
    the whole family is revoked, so the newest token of it stops working too.
    """
    claims = decode_token(data.refresh, key=settings.signing_key, expected_type="refresh")
    jti, family_id = _token_ids(claims)
    now = datetime.now(UTC)
    async with uow:
        session = uow.session
        user = await _lock_user(session, claims.user_id)
        token = await _locked_token(session, jti, claims.user_id, family_id)
        if user is None or token is None or token.revoked_at is not None:
            raise InvalidToken()
        if token.used_at is None:
            started = _family_started(claims, token)
            family_ends = started + timedelta(days=settings.refresh_family_max_days)
            if token.expires_at <= now or not user.is_active or family_ends <= now:
                raise InvalidToken()
            token.used_at = now
            return await _issue_tokens(
                session, user, settings, family_id=token.family_id, family_started=started
            )
        await _revoke(session, RefreshToken.family_id == token.family_id, now)
    # Raised after the block so that the revocation is committed.
    logger.warning(
        "refresh token reuse: family %s of user %s revoked", token.family_id, claims.user_id
    )
    raise InvalidToken("This refresh token was already used; the session has been revoked.")


async def logout(uow: UnitOfWork, data: RefreshRequest, settings: Settings) -> None:
    """Revoke the family of a refresh token (repeating it is harmless)."""
    claims = decode_token(data.refresh, key=settings.signing_key, expected_type="refresh")
    jti, family_id = _token_ids(claims)
    async with uow:
        session = uow.session
        user = await _lock_user(session, claims.user_id)
        token = await _locked_token(session, jti, claims.user_id, family_id)
        if user is None or token is None:
            raise InvalidToken()
        await _revoke(session, RefreshToken.family_id == token.family_id)


def _family_started(claims: TokenClaims, token: RefreshToken) -> datetime:
    """When the login of a refresh token's family happened (tokens issued before the claim
    existed count from their own creation)."""
    if claims.family_started is not None:
        return datetime.fromtimestamp(claims.family_started, UTC)
    return token.created_at


async def _issue_tokens(
    session: AsyncSession,
    user: User,
    settings: Settings,
    *,
    family_id: uuid.UUID,
    family_started: datetime,
) -> TokenPair:
    key = settings.signing_key
    access_lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    access, _ = create_token(
        user_id=user.id,
        token_type="access",  # noqa: S106
        key=key,
        lifetime=access_lifetime,
        extra={"role": user.role, "pwv": password_stamp(user)},
    )
    jti = uuid.uuid4()
    refresh_token, claims = create_token(
        user_id=user.id,
        token_type="refresh",  # noqa: S106
        key=key,
        # Rotation never carries a family past REFRESH_FAMILY_MAX_DAYS after its login.
        lifetime=min(
            timedelta(days=settings.refresh_token_expire_days),
            family_started + timedelta(days=settings.refresh_family_max_days) - datetime.now(UTC),
        ),
        jti=str(jti),
        extra={"fam": str(family_id), "fst": int(family_started.timestamp())},
    )
    session.add(
        RefreshToken(jti=jti, user_id=user.id, family_id=family_id, expires_at=claims.expires_at)
    )
    await session.flush()
    return TokenPair(
        access=access,
        refresh=refresh_token,
        expires_in=int(access_lifetime.total_seconds()),
    )


def _token_ids(claims: TokenClaims) -> tuple[uuid.UUID, uuid.UUID]:
    try:
        return uuid.UUID(claims.jti), uuid.UUID(str(claims.family))
    except ValueError as exc:
        raise InvalidToken() from exc


async def _locked_token(
    session: AsyncSession, jti: uuid.UUID, user_id: int, family_id: uuid.UUID
) -> RefreshToken | None:
    # FOR UPDATE: of two concurrent refreshes with one token, the second waits and then
    # sees it spent.
    token = await session.scalar(
        select(RefreshToken).where(RefreshToken.jti == jti).with_for_update()
    )
    if token is None or token.user_id != user_id or token.family_id != family_id:
        return None
    return token


async def _revoke(
    session: AsyncSession, which: ColumnElement[bool], now: datetime | None = None
) -> None:
    await session.execute(
        update(RefreshToken)
        .where(which, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now or datetime.now(UTC)),
        execution_options={"synchronize_session": False},
    )


# --- passwords --------------------------------------------------------------------------


async def change_password(uow: UnitOfWork, user: User, data: ChangePassword) -> None:
    if not await verify_password(data.old_password, user.hashed_password):
        raise WrongPassword()
    check_password(
        data.new_password, username=user.username, email=user.email, field="body.new_password"
    )
    hashed = await hash_password(data.new_password)
    async with uow:
        current = await _lock_user(uow.session, user.id)
        # Changed meanwhile (another change or a reset): the old password was checked
        # against a hash that is gone.
        if current is None or current.hashed_password != user.hashed_password:
            raise WrongPassword()
        await _set_password(uow.session, current, hashed)


async def request_password_reset(
    uow: UnitOfWork,
    data: PasswordResetRequest,
    settings: Settings,
    background: BackgroundTasks,
) -> None:
    """Email a reset link if an active account has this address; say nothing either way.

    The email goes out after the response, so the answer takes the same time whether
    or not the address is known.
    """
    email = data.email.lower()
    async with uow:
        user = await uow.session.scalar(select(User).where(User.email == email))
    if user is None or not user.is_active:
        return
    link = reset_link(
        settings, reset.encode_uid(user.id), reset.make_token(user, settings.signing_key)
    )
    background.add_task(
        _send_reset_email, uow, settings, email=user.email, username=user.username, link=link
    )


async def confirm_password_reset(
    uow: UnitOfWork,
    uidb64: str,
    token: str,
    data: PasswordResetConfirm,
    settings: Settings,
) -> None:
    user_id = reset.decode_uid(uidb64)
    if user_id is None:
        raise InvalidResetLink()
    async with uow:
        user = await uow.session.get(User, user_id)
    if user is None or not _reset_token_valid(user, token, settings):
        raise InvalidResetLink()
    check_password(
        data.new_password, username=user.username, email=user.email, field="body.new_password"
    )
    hashed = await hash_password(data.new_password)
    async with uow:
        current = await _lock_user(uow.session, user_id)
        # Checked again under the lock: of two concurrent uses of one link, one wins.
        if current is None or not _reset_token_valid(current, token, settings):
            raise InvalidResetLink()
        await _set_password(uow.session, current, hashed)


def reset_link(settings: Settings, uidb64: str, token: str) -> str:
    if settings.password_reset_url:
        return settings.password_reset_url.format(uidb64=uidb64, token=token)
    # No request at hand when the email is written: the documented local address by default.
    base = (settings.public_base_url or "http://127.0.0.1:8000").rstrip("/")
    return f"{base}/api/auth/password-reset-confirm/{uidb64}/{token}/"


def _reset_token_valid(user: User, token: str, settings: Settings) -> bool:
    return user.is_active and reset.check_token(
        user,
        token,
        settings.signing_key,
        max_age_seconds=settings.password_reset_expire_minutes * 60,
    )


async def _set_password(session: AsyncSession, user: User, hashed: str) -> None:
    """Store a new hash; earlier access tokens, reset links and refresh tokens all die."""
    now = datetime.now(UTC)
    user.hashed_password = hashed
    user.password_changed_at = now
    await _revoke(session, RefreshToken.user_id == user.id, now)
    await session.flush()


async def _send_reset_email(
    uow: UnitOfWork, settings: Settings, *, email: str, username: str, link: str
) -> None:
    try:
        await notifications.send_password_reset(
            settings, email=email, username=username, link=link, uow=uow
        )
    except Exception:
        # The client already has its 202; a failed delivery must not look like a server error.
        logger.exception("sending the password reset email to user %s failed", username)


# --- upkeep -----------------------------------------------------------------------------


async def purge_expired_refresh_tokens(session: AsyncSession) -> int:
    """Delete refresh tokens past their expiry, used or not (their JWT is refused anyway).

    Used tokens that have not expired stay: presenting one again is how a stolen token
    is detected (its family is revoked).
    """
    result = await session.execute(
        delete(RefreshToken).where(RefreshToken.expires_at < func.now()),
        execution_options={"synchronize_session": False},
    )
    return result.rowcount or 0  # type: ignore[attr-defined]
