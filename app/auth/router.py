"""HTTP routes of the auth domain: /api/auth/..."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Path, Response, status

from app.auth import service
from app.auth.deps import CurrentUser, SettingsDep
from app.auth.schemas import (
    ChangePassword,
    Detail,
    Login,
    PasswordResetConfirm,
    PasswordResetRequest,
    Problem,
    ProfileUpdate,
    RefreshRequest,
    TokenPair,
    UserRead,
    UserRegister,
)
from app.core.db import UoW

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _problems(*items: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": Problem,
            "description": description,
            "content": {"application/problem+json": {}},
        }
        for code, description in items
    }


_INVALID_BODY = (422, "`validation_error`: the body is not valid (see `errors`).")
_UNAUTHENTICATED = (
    401,
    "`not_authenticated` without a token; `invalid_token` for a malformed, expired or "
    "revoked token, or one of a deactivated account.",
)
_TAKEN = (409, "`username_taken` or `email_taken` (both case-insensitive).")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    operation_id="auth_register",
    summary="Create an account",
    description="Registers an attendee or organizer. The role cannot be changed later.",
    responses=_problems(_TAKEN, (422, "`validation_error`, e.g. a password that breaks a rule.")),
)
async def register(data: UserRegister, uow: UoW) -> UserRead:
    return UserRead.model_validate(await service.register(uow, data))


@router.post(
    "/login",
    operation_id="auth_login",
    summary="Log in with username or email and get tokens",
    description="`username` may be the username or the email address, in any case. "
    "Wrong credentials and deactivated accounts get the same 401 `invalid_token`.",
    responses=_problems(
        (401, "`invalid_token`: no active account with these credentials."), _INVALID_BODY
    ),
)
async def login(data: Login, uow: UoW, settings: SettingsDep) -> TokenPair:
    return await service.login(uow, data, settings)


@router.post(
    "/token/refresh",
    operation_id="auth_refresh",
    summary="Exchange a refresh token for a new token pair",
    description="Each refresh token works once. Presenting one that was already used revokes "
    "every token of its login session (its family) and answers 401.",
    responses=_problems(
        (401, "`invalid_token`: expired, revoked, unknown or already used."), _INVALID_BODY
    ),
)
async def refresh(data: RefreshRequest, uow: UoW, settings: SettingsDep) -> TokenPair:
    return await service.refresh(uow, data, settings)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth_logout",
    summary="Log out: revoke the session of a refresh token",
    description="Revokes the refresh token and every token rotated from the same login. "
    "Logging out an already revoked session again answers 204. A token that this service "
    "did not issue, or that is malformed or expired, answers 401 `invalid_token`.",
    responses=_problems((401, "`invalid_token`: not a valid refresh token."), _INVALID_BODY),
)
async def logout(data: RefreshRequest, uow: UoW, settings: SettingsDep) -> Response:
    await service.logout(uow, data, settings)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/profile",
    operation_id="auth_profile_read",
    summary="The current user",
    responses=_problems(_UNAUTHENTICATED),
)
async def read_profile(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


_PROFILE_UPDATE = {
    "responses": _problems(_UNAUTHENTICATED, _TAKEN, _INVALID_BODY),
    "description": "Changes the username and/or the email; fields left out keep their value. "
    "`role` is read-only and ignored if sent.",
}


@router.put(
    "/profile",
    operation_id="auth_profile_replace",
    summary="Update the current user's username and email",
    **_PROFILE_UPDATE,
)
async def replace_profile(data: ProfileUpdate, user: CurrentUser, uow: UoW) -> UserRead:
    return UserRead.model_validate(await service.update_profile(uow, user, data))


@router.patch(
    "/profile",
    operation_id="auth_profile_update",
    summary="Partially update the current user's username or email",
    **_PROFILE_UPDATE,
)
async def update_profile(data: ProfileUpdate, user: CurrentUser, uow: UoW) -> UserRead:
    return UserRead.model_validate(await service.update_profile(uow, user, data))


@router.post(
    "/change-password",
    operation_id="auth_change_password",
    summary="Change the password",
    description="Revokes every refresh token of the user; access tokens issued before the "
    "change stop working, including the one used for this request. Log in again afterwards.",
    responses=_problems(
        _UNAUTHENTICATED,
        (
            422,
            "`wrong_password` if `old_password` does not match; `validation_error` if the "
            "new password breaks a rule.",
        ),
    ),
)
async def change_password(data: ChangePassword, user: CurrentUser, uow: UoW) -> Detail:
    await service.change_password(uow, user, data)
    return Detail(detail="Password changed. Log in again with the new password.")


@router.post(
    "/password-reset-request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth_password_reset_request",
    summary="Email a password reset link",
    description="Answers 202 with the same body whether or not an active account has this "
    "email. The link is single-use and expires (PASSWORD_RESET_EXPIRE_MINUTES, 60 by default).",
    responses=_problems(_INVALID_BODY),
)
async def password_reset_request(
    data: PasswordResetRequest, uow: UoW, settings: SettingsDep, background: BackgroundTasks
) -> Detail:
    await service.request_password_reset(uow, data, settings, background)
    return Detail(
        detail="If an active account uses this email address, a reset link has been sent to it."
    )


@router.post(
    "/password-reset-confirm/{uidb64}/{token}",
    operation_id="auth_password_reset_confirm",
    summary="Set a new password with a reset link",
    description="Revokes every refresh token of the user and ends older access tokens.",
    responses=_problems(
        (
            422,
            "`invalid_reset_link` if the link is unknown, used, expired or outdated; "
            "`validation_error` if the new password breaks a rule.",
        ),
    ),
)
async def password_reset_confirm(
    data: PasswordResetConfirm,
    uow: UoW,
    settings: SettingsDep,
    uidb64: str = Path(description="The user id, URL-safe base64."),
    token: str = Path(description="The token from the reset email."),
) -> Detail:
    await service.confirm_password_reset(uow, uidb64, token, data, settings)
    return Detail(detail="Password has been reset. Log in with the new password.")


@router.delete(
    "/deactivate-account",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth_deactivate_account",
    summary="Deactivate the current account",
    description="The account can no longer log in; its refresh and access tokens stop working.",
    responses=_problems(_UNAUTHENTICATED),
)
async def deactivate_account(user: CurrentUser, uow: UoW) -> Response:
    await service.deactivate(uow, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
