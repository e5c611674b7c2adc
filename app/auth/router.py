"""HTTP routes of the auth domain: /api/auth/..."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Request, Response, status

from app.auth import service
from app.auth.deps import CurrentUser, OptionalAuth, SettingsDep
from app.auth.schemas import (
    ChangePassword,
    DeactivateAccount,
    Detail,
    Login,
    PasswordResetConfirm,
    PasswordResetRequest,
    ProfileUpdate,
    RefreshRequest,
    TokenPair,
    UserRead,
    UserRegister,
)
from app.core.db import UoW
from app.core.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidResetLink,
    InvalidToken,
    UsernameTaken,
    WrongPassword,
)
from app.core.links import created
from app.core.openapi import problem_responses
from app.core.ratelimit import Limiter, client_ip, limit_per_ip
from app.core.schemas import Line

# 401 on routes taking a bearer token and 422 on routes with input are documented
# by app.core.openapi; the responses below add each route's own errors. The public routes
# authenticate by their body, yet check a bearer token that is sent, like every route.
router = APIRouter(prefix="/api/auth", tags=["auth"])

# Tokens must not stay in a browser's or proxy's cache (RFC 6749, section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    operation_id="auth_register",
    summary="Create an account",
    description="Registers an attendee or organizer; the role cannot be changed later. "
    "A password that breaks a rule is 422 `validation_error` with the reasons at "
    "`body.password`. Limited per client address (RATE_LIMIT_REGISTER).",
    dependencies=[OptionalAuth, Depends(limit_per_ip("register_ip"))],
    response_description="The account created; `Location` is the profile it can read once "
    "logged in.",
    responses=problem_responses(UsernameTaken, EmailTaken),
)
async def register(data: UserRegister, uow: UoW, request: Request, response: Response) -> UserRead:
    user = await service.register(uow, data)
    created(request, response, "/api/auth/profile/")
    return UserRead.model_validate(user)


@router.post(
    "/login",
    operation_id="auth_login",
    summary="Log in with username or email and get tokens",
    description="`username` may be the username or the email address, in any case. "
    "Wrong credentials and deactivated accounts get the same 401 `invalid_credentials` "
    "(never `invalid_token`, which means: refresh the access token). "
    "Limited per account name (RATE_LIMIT_LOGIN, every attempt counts, a successful login "
    "resets it) and per client address (RATE_LIMIT_LOGIN_IP, failed logins count).",
    responses=problem_responses(InvalidCredentials),
    dependencies=[OptionalAuth],
)
async def login(
    data: Login,
    request: Request,
    response: Response,
    uow: UoW,
    settings: SettingsDep,
    limiter: Limiter,
) -> TokenPair:
    response.headers.update(NO_STORE)
    account, address = data.username.strip().lower(), client_ip(request)
    # Counted before the hash runs, atomically: concurrent guesses get no extra hashes.
    await limiter.reserve("login_ip", address)
    try:
        await limiter.hit("login", account)
        tokens = await service.login(uow, data, settings)
    except InvalidCredentials:
        raise  # a failed login stays counted against the address
    except BaseException:
        await limiter.refund("login_ip", address)
        raise
    await limiter.refund("login_ip", address)
    await limiter.clear("login", account)
    return tokens


@router.post(
    "/token/refresh",
    operation_id="auth_refresh",
    summary="Exchange a refresh token for a new token pair",
    description="Each refresh token works once. Presenting one that was already used revokes "
    "every token of its login session (its family) and answers 401; so does a token that is "
    "expired, revoked, unknown or not a refresh token.",
    responses=problem_responses(InvalidToken),
    dependencies=[OptionalAuth],
)
async def refresh(
    data: RefreshRequest, response: Response, uow: UoW, settings: SettingsDep
) -> TokenPair:
    response.headers.update(NO_STORE)
    return await service.refresh(uow, data, settings)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth_logout",
    summary="Log out: revoke the session of a refresh token",
    description="Revokes the refresh token and every token rotated from the same login. "
    "Logging out an already revoked or used token of this service again answers 204. A token "
    "that is malformed, expired, wrongly signed or unknown answers 401 `invalid_token`.",
    responses=problem_responses(InvalidToken),
    dependencies=[OptionalAuth],
)
async def logout(data: RefreshRequest, uow: UoW, settings: SettingsDep) -> Response:
    await service.logout(uow, data, settings)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/profile", operation_id="auth_profile_read", summary="The current user")
async def read_profile(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


_PROFILE_UPDATE_DESCRIPTION = (
    "Changes the username and/or the email; fields left out (or null) keep their value. "
    "`role` is read-only and ignored if sent. Changing the email needs `current_password` "
    "(422 `validation_error` without it, 422 `wrong_password` when it is wrong)."
)


async def update_profile(data: ProfileUpdate, user: CurrentUser, uow: UoW) -> UserRead:
    return UserRead.model_validate(await service.update_profile(uow, user, data))


# PUT and PATCH take the same body and do the same: fields left out keep their value.
for _method, _operation_id, _summary in (
    ("PUT", "auth_profile_replace", "Update the current user's username and email"),
    ("PATCH", "auth_profile_update", "Partially update the current user's username or email"),
):
    router.add_api_route(
        "/profile",
        update_profile,
        methods=[_method],
        operation_id=_operation_id,
        summary=_summary,
        description=_PROFILE_UPDATE_DESCRIPTION,
        responses=problem_responses(UsernameTaken, EmailTaken, WrongPassword),
    )


@router.post(
    "/change-password",
    operation_id="auth_change_password",
    summary="Change the password",
    description="Needs the current password (`wrong_password` otherwise); the new one follows "
    "the password rules. Revokes every refresh token of the user; access tokens issued "
    "before the change stop working, including the one used for this request: log in again. "
    "Attempts are limited per user (RATE_LIMIT_CHANGE_PASSWORD, 5 a minute by default).",
    responses=problem_responses(WrongPassword),
)
async def change_password(
    data: ChangePassword, user: CurrentUser, uow: UoW, limiter: Limiter
) -> Detail:
    await limiter.hit("change_password", str(user.id))
    await service.change_password(uow, user, data)
    return Detail(detail="Password changed. Log in again with the new password.")


@router.post(
    "/password-reset-request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth_password_reset_request",
    summary="Email a password reset link",
    description="Answers 202 with the same body whether or not an active account has this "
    "email; the email is sent after the response. The link is single-use and expires "
    "(PASSWORD_RESET_EXPIRE_MINUTES, 60 by default). Limited per email and per client "
    "address (RATE_LIMIT_PASSWORD_RESET).",
    dependencies=[OptionalAuth, Depends(limit_per_ip("password_reset_ip"))],
)
async def password_reset_request(
    data: PasswordResetRequest,
    uow: UoW,
    settings: SettingsDep,
    background: BackgroundTasks,
    limiter: Limiter,
) -> Detail:
    await limiter.hit("password_reset", data.email.lower())
    await service.request_password_reset(uow, data, settings, background)
    return Detail(
        detail="If an active account uses this email address, a reset link has been sent to it."
    )


@router.post(
    "/password-reset-confirm/{uidb64}/{token}",
    operation_id="auth_password_reset_confirm",
    summary="Set a new password with a reset link",
    description="`invalid_reset_link` when the link is unknown, used, expired or outdated "
    "(checked before the new password). Revokes every refresh token of the user and ends "
    "older access tokens.",
    responses=problem_responses(InvalidResetLink),
    dependencies=[OptionalAuth],
)
async def password_reset_confirm(
    data: PasswordResetConfirm,
    uow: UoW,
    settings: SettingsDep,
    uidb64: Annotated[Line, Path(description="The user id, URL-safe base64 without padding.")],
    token: Annotated[Line, Path(description="The token from the reset email.")],
) -> Detail:
    await service.confirm_password_reset(uow, uidb64, token, data, settings)
    return Detail(detail="Password has been reset. Log in with the new password.")


@router.delete(
    "/deactivate-account",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth_deactivate_account",
    summary="Deactivate the current account",
    description="Needs the current password (422 `wrong_password` otherwise). The account can "
    "no longer log in; its refresh and access tokens stop working.",
    responses=problem_responses(WrongPassword),
)
async def deactivate_account(data: DeactivateAccount, user: CurrentUser, uow: UoW) -> Response:
    await service.deactivate_own_account(uow, user, data.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
