"""JSON routes that change a user's TOTP factor and recovery codes (DESIGN §3.3).

Each needs a credential, the CSRF rules of any state-changing route, and a fresh
sign-in (403 ``reauthentication_required`` otherwise); a session keeps its ID
through them (they grant nothing it did not have). Secrets and codes are in the
response bodies only, never cached (``Cache-Control: no-store``).

Setting up TOTP while it is active is 409 (it must be removed first), as is asking
for recovery codes without an active TOTP.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.errors import InvalidRequest
from gatepass.server.api import NO_STORE, Body, Text, fresh_identity
from gatepass.server.context import gatepass
from gatepass.server.requests import validate


class CodeIn(Body):
    code: Text


async def begin_totp(request: Request) -> Response:
    identity, _ = await fresh_identity(request)
    setup = await gatepass(request).factors.begin_totp(identity.user)
    return JSONResponse(
        {"secret": setup.secret, "otpauth_uri": setup.otpauth_uri, "qr_svg": setup.qr_svg},
        headers=NO_STORE,
    )


async def confirm_totp(request: Request) -> Response:
    identity, fields = await fresh_identity(request)
    body = validate(CodeIn, fields or {})
    codes = await gatepass(request).factors.confirm_totp(identity.user_id, body.code)
    return JSONResponse({"recovery_codes": codes}, headers=NO_STORE)


async def remove_totp(request: Request) -> Response:
    identity, fields = await fresh_identity(request)
    body = validate(CodeIn, fields or {})
    gp = gatepass(request)
    refused: list[InvalidRequest] = []

    async def attempt() -> bool:
        try:
            await gp.factors.remove_totp(identity.user_id, body.code)
        except InvalidRequest as exc:
            refused.append(exc)
            return False
        return True

    # Wrong codes count against this session or family (ended after too many), so
    # a stolen, fresh session cannot guess its way to removing the factor.
    if not await gp.accounts.own_attempt(identity, attempt):
        raise refused[0]
    return Response(status_code=204, headers=NO_STORE)


async def regenerate_recovery_codes(request: Request) -> Response:
    identity, _ = await fresh_identity(request)
    codes = await gatepass(request).factors.regenerate_recovery_codes(identity.user_id)
    return JSONResponse({"recovery_codes": codes}, headers=NO_STORE)


routes: list[BaseRoute] = [
    Route("/auth/mfa/totp/setup", begin_totp, methods=["POST"]),
    Route("/auth/mfa/totp/confirm", confirm_totp, methods=["POST"]),
    Route("/auth/mfa/totp", remove_totp, methods=["DELETE"]),
    Route("/auth/mfa/recovery-codes", regenerate_recovery_codes, methods=["POST"]),
]
