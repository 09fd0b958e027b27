"""JSON routes of the account flows over mail (DESIGN §3.2): verification, resend,
forgotten password, reset, e-mail change and account deletion.

The mail-triggering routes answer the same status and body whatever the address;
the link routes answer one 400 for every string that is not a live link token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.server.api import NO_STORE, Body, Text, TokenText, mutating_identity
from gatepass.server.context import clear_session_cookie, enforce_origin, gatepass, ip_of
from gatepass.server.requests import read_fields, validate

#: The body of every mail-triggering answer: it never says whether mail went out.
SENT_IF_EXISTS = {"status": "sent_if_exists"}
VERIFICATION_SENT = {"status": "verification_sent"}


class TokenIn(Body):
    token: TokenText


class EmailIn(Body):
    email: Text


class ResetIn(Body):
    token: TokenText
    new_password: Text


class EmailChangeIn(Body):
    new_email: Text
    current_password: Text


class CurrentPasswordIn(Body):
    current_password: Text


def _accepted(body: dict[str, str]) -> Response:
    return JSONResponse(body, status_code=202, headers=NO_STORE)


async def verify_email(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(TokenIn, fields)
    user = await gatepass(request).accounts.verify_email(body.token)
    return JSONResponse(
        {"id": user.id, "email": user.email, "email_verified": user.email_verified},
        headers=NO_STORE,
    )


async def resend_verification(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(EmailIn, fields)
    await gatepass(request).accounts.resend_verification(body.email, ip=ip_of(request))
    return _accepted(SENT_IF_EXISTS)


async def forgot_password(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(EmailIn, fields)
    await gatepass(request).accounts.request_password_reset(body.email, ip=ip_of(request))
    return _accepted(SENT_IF_EXISTS)


async def reset_password(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(ResetIn, fields)
    await gatepass(request).accounts.reset_password(body.token, body.new_password)
    return Response(status_code=204, headers=NO_STORE)


async def change_email(request: Request) -> Response:
    identity, fields = await mutating_identity(request)
    body = validate(EmailChangeIn, fields or {})
    await gatepass(request).accounts.request_email_change(
        identity, body.new_email, body.current_password, ip=ip_of(request)
    )
    return _accepted(VERIFICATION_SENT)


async def delete_account(request: Request) -> Response:
    identity, fields = await mutating_identity(request)
    body = validate(CurrentPasswordIn, fields or {})
    gp = gatepass(request)
    await gp.accounts.delete_account(identity, body.current_password)
    response = Response(status_code=204, headers=NO_STORE)
    if identity.session is not None:
        clear_session_cookie(response, gp)
    return response


routes: list[BaseRoute] = [
    Route("/auth/email/verify", verify_email, methods=["POST"]),
    Route("/auth/email/resend", resend_verification, methods=["POST"]),
    Route("/auth/email/change", change_email, methods=["POST"]),
    Route("/auth/password/forgot", forgot_password, methods=["POST"]),
    Route("/auth/password/reset", reset_password, methods=["POST"]),
    Route("/auth/account", delete_account, methods=["DELETE"]),
]
