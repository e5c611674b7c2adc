"""Authentication dependencies: the current user and role requirements."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select

from app.auth.access import check_role, check_token_user, only
from app.auth.models import Role, User
from app.core.config import Settings
from app.core.errors import InvalidToken, NotAuthenticated, PermissionDenied, ServiceUnavailable
from app.core.openapi import raises
from app.core.security import TokenClaims, decode_token

_BEARER_DESCRIPTION = "An access token from POST /api/auth/login/ (paste the token only)."


class OptionalBearer(HTTPBearer):
    """The bearer scheme of public routes: anonymous, or a token that must then be valid.

    The OpenAPI schema declares such operations `security: [{}, {HTTPBearer: []}]`.
    """

    anonymous_allowed = True


bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="HTTPBearer", description=_BEARER_DESCRIPTION
)
optional_bearer_scheme = OptionalBearer(
    auto_error=False, scheme_name="HTTPBearer", description=_BEARER_DESCRIPTION
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
OptionalCredentials = Annotated[
    HTTPAuthorizationCredentials | None, Depends(optional_bearer_scheme)
]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


_USER_BY_ID = select(*User.__table__.c).where(User.__table__.c.id == bindparam("user_id"))


async def _load_user(request: Request, user_id: int) -> User | None:
    # One statement on an autocommit connection: no BEGIN/ROLLBACK round trips and
    # no ORM session for a read that every authenticated request makes.
    async with request.app.state.autocommit_engine.connect() as conn:
        row = (await conn.execute(_USER_BY_ID, {"user_id": user_id})).first()
    return User(**row._mapping) if row is not None else None


def _required_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        if request.headers.get("authorization"):
            raise InvalidToken()
        raise NotAuthenticated()
    return credentials.credentials


def _access_claims(request: Request, token: str) -> TokenClaims:
    settings: Settings = request.app.state.settings
    return decode_token(token, key=settings.signing_key, expected_type="access")


async def _user_from_token(request: Request, token: str) -> User:
    claims = _access_claims(request, token)
    user = await _load_user(request, claims.user_id)
    return check_token_user(user, claims, request.app.state.settings)


@raises(NotAuthenticated, InvalidToken, ServiceUnavailable)
async def get_current_user(request: Request, credentials: Credentials) -> User:
    return await _user_from_token(request, _required_token(request, credentials))


@raises(NotAuthenticated, InvalidToken)
async def get_access_claims(request: Request, credentials: Credentials) -> TokenClaims:
    """The verified claims of the access token, without loading the account.

    For hot paths that read the account in their own first statement; they must
    pass it through ``check_token_user`` (and ``check_role``) before acting.
    """
    return _access_claims(request, _required_token(request, credentials))


@raises(NotAuthenticated, InvalidToken, PermissionDenied)
async def get_attendee_claims(request: Request, credentials: Credentials) -> TokenClaims:
    """Access claims of an attendee's token, checked without the database.

    Tokens from login carry the account's role, so an organizer is refused here,
    before the request body is validated, as with the Attendee dependency. The
    account itself (active, token not older than its password, its role) is still
    checked by the caller's first statement.
    """
    claims = await get_access_claims(request, credentials)
    if claims.role is not None and claims.role != Role.attendee:
        raise only(Role.attendee)
    return claims


@raises(InvalidToken, ServiceUnavailable)
async def get_optional_user(request: Request, credentials: OptionalCredentials) -> User | None:
    """The caller if a token was sent (and it must then be valid), else None."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise InvalidToken()
        return None
    return await _user_from_token(request, credentials.credentials)


def require_role(role: Role):
    @raises(PermissionDenied)
    async def dependency(user: Annotated[User, Depends(get_current_user)]) -> User:
        return check_role(user, role)

    dependency.__name__ = f"require_{role.value}"
    return dependency


CurrentUser = Annotated[User, Depends(get_current_user)]
AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]
AttendeeClaims = Annotated[TokenClaims, Depends(get_attendee_claims)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]
# For public routes that do not need the caller: `dependencies=[OptionalAuth]`. A token
# that is sent is still checked, as on every route (401 `invalid_token`).
OptionalAuth = Depends(get_optional_user)
Organizer = Annotated[User, Depends(require_role(Role.organizer))]
Attendee = Annotated[User, Depends(require_role(Role.attendee))]
