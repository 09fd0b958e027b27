"""JSON routes of sign-ins with a second factor (DESIGN §3.3): the pending step,
passwordless passkey sign-ins, the caller's factors and reauthentication."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.errors import AuthenticationFailed, InvalidRequest, RateLimited
from gatepass.second_factor import PendingSignIn
from gatepass.server import pages
from gatepass.server.api import (
    NO_STORE,
    Body,
    Text,
    TokenText,
    grant_sign_in,
    mutating_identity,
)
from gatepass.server.context import (
    authenticate,
    enforce_origin,
    gatepass,
    ip_of,
    presented_device_cookie,
)
from gatepass.server.requests import is_form, read_fields, validate

Method = Literal["totp", "recovery_code", "webauthn"]
Client = Literal["web", "mobile", "api"]
#: A WebAuthn credential in its JSON form (PublicKeyCredential.toJSON()); its
#: fields are checked by the passkey module.
Credential = Annotated[dict[str, Any], Field(max_length=16)]


class MfaVerifyIn(Body):
    mfa_token: TokenText
    method: Method
    code: Text | None = None
    credential: Credential | None = None


class MfaTokenIn(Body):
    mfa_token: TokenText


class PasskeyLoginIn(Body):
    credential: Credential
    client: Client = "web"


class ReauthenticateIn(Body):
    current_password: Text | None = None
    method: Method | None = None
    code: Text | None = None
    credential: Credential | None = None


def _options(json_text: str) -> Response:
    # WebAuthn Level 3 JSON options, as py_webauthn writes them, as the whole body.
    return Response(json_text, media_type="application/json", headers=NO_STORE)


async def verify(request: Request) -> Response:
    form = is_form(request)
    fields = await read_fields(request)
    enforce_origin(request)
    if form:
        pages.check_form_token(request, fields)
    body = validate(MfaVerifyIn, fields)
    gp = gatepass(request)
    try:
        finished = await gp.second_factors.finish(
            body.mfa_token,
            body.method,
            code=body.code,
            credential=body.credential,
            ip=ip_of(request),
            device_cookie=presented_device_cookie(request),
        )
    except (AuthenticationFailed, RateLimited, InvalidRequest) as exc:
        if not form:
            raise
        return await _form_step_again(request, body.mfa_token, exc)
    return await grant_sign_in(request, finished.user, finished.client, finished.proof, form=form)


async def _form_step_again(
    request: Request, mfa_token: str, error: AuthenticationFailed | RateLimited | InvalidRequest
) -> Response:
    """The form's second step again after a wrong code, or the sign-in page when the
    pending sign-in is gone."""
    gp = gatepass(request)
    user_id = await gp.second_factors.pending_user(mfa_token)
    if user_id is None:
        return pages.render_login(request, error=AuthenticationFailed())
    methods = await gp.second_factors.methods(user_id)
    return pages.render_second_factor(request, PendingSignIn(mfa_token, methods), error=error)


async def webauthn_options(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(MfaTokenIn, fields)
    gp = gatepass(request)
    # Each call stores a challenge: counted like a sign-in attempt from this client.
    await gp.throttle.count_ip(ip_of(request))
    return _options(await gp.second_factors.webauthn_options(body.mfa_token))


async def reauthenticate_options(request: Request) -> Response:
    """WebAuthn request options for reauthenticating with one of the caller's passkeys."""
    identity, _ = await mutating_identity(request)
    gp = gatepass(request)
    options = await gp.passkeys.authentication_options(user_id=identity.user.id, ceremony="reauth")
    return _options(options)


async def factors(request: Request) -> Response:
    identity = await authenticate(request)
    gp = gatepass(request)
    summary = await gp.factors.summary(identity.user.id)
    return JSONResponse(
        {
            "totp": summary.totp,
            "recovery_codes_left": summary.recovery_codes_left,
            "passkeys": await gp.passkeys.count(identity.user.id),
        },
        headers=NO_STORE,
    )


async def passkey_login_options(request: Request) -> Response:
    enforce_origin(request)
    gp = gatepass(request)
    await gp.throttle.count_ip(ip_of(request))
    return _options(await gp.passkeys.authentication_options(user_id=None, ceremony="login"))


async def passkey_login(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(PasskeyLoginIn, fields)
    gp = gatepass(request)
    await gp.throttle.count_ip(ip_of(request))
    user, proof = await gp.second_factors.passwordless(body.credential)
    await gp.accounts.check_may_sign_in(user)
    return await grant_sign_in(request, user, body.client, proof)


async def reauthenticate(request: Request) -> Response:
    identity, fields = await mutating_identity(request)
    body = validate(ReauthenticateIn, fields or {})
    gp = gatepass(request)
    if body.current_password is not None:
        await gp.accounts.reauthenticate(identity, body.current_password)
    else:
        await gp.second_factors.reauthenticate(
            identity, method=body.method, code=body.code, credential=body.credential
        )
    return Response(status_code=204, headers=NO_STORE)


routes: list[BaseRoute] = [
    Route("/auth/mfa", factors, methods=["GET"]),
    Route("/auth/mfa/verify", verify, methods=["POST"]),
    Route("/auth/mfa/webauthn/options", webauthn_options, methods=["POST"]),
    Route("/auth/passkeys/login/options", passkey_login_options, methods=["POST"]),
    Route("/auth/passkeys/login", passkey_login, methods=["POST"]),
    Route("/auth/reauthenticate", reauthenticate, methods=["POST"]),
    Route("/auth/reauthenticate/options", reauthenticate_options, methods=["POST"]),
]
