"""JSON routes of the caller's passkeys (DESIGN §3.3): creation options, register,
list, rename, remove.

Every change needs the CSRF rules (:func:`~gatepass.server.api.mutating_identity`)
and a fresh sign-in; none changes the session ID (they grant nothing the session
did not have). An ID that is not one of the caller's passkeys is 404, whatever
its shape. Passwordless sign-in (``/auth/passkeys/login*``) lives elsewhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.passkeys import PasskeyView
from gatepass.server.api import NO_STORE, Body, fresh_identity, iso_time
from gatepass.server.context import authenticate, gatepass
from gatepass.server.requests import validate


class RegisterPasskeyIn(Body):
    # Any object: what is wrong inside it is the passkey check's to say (400).
    credential: dict[str, Any]
    name: StrictStr | None = None


class RenamePasskeyIn(Body):
    name: StrictStr


def passkey_json(view: PasskeyView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "created_at": iso_time(view.created_at),
        "last_used_at": None if view.last_used_at is None else iso_time(view.last_used_at),
    }


async def registration_options(request: Request) -> Response:
    identity, _ = await fresh_identity(request)
    options = await gatepass(request).passkeys.registration_options(identity.user)
    return Response(options, media_type="application/json", headers=NO_STORE)


async def register(request: Request) -> Response:
    identity, fields = await fresh_identity(request)
    body = validate(RegisterPasskeyIn, fields or {})
    view = await gatepass(request).passkeys.register(identity.user, body.credential, body.name)
    payload = {"id": view.id, "name": view.name, "created_at": iso_time(view.created_at)}
    return JSONResponse(payload, status_code=201, headers=NO_STORE)


async def list_passkeys(request: Request) -> Response:
    identity = await authenticate(request)
    views = await gatepass(request).passkeys.list(identity.user.id)
    return JSONResponse([passkey_json(v) for v in views], headers=NO_STORE)


async def rename(request: Request) -> Response:
    identity, fields = await fresh_identity(request)
    body = validate(RenamePasskeyIn, fields or {})
    view = await gatepass(request).passkeys.rename(
        identity.user.id, request.path_params["passkey_id"], body.name
    )
    return JSONResponse(passkey_json(view), headers=NO_STORE)


async def delete(request: Request) -> Response:
    identity, _ = await fresh_identity(request)
    await gatepass(request).passkeys.delete(identity.user.id, request.path_params["passkey_id"])
    return Response(status_code=204, headers=NO_STORE)


routes: list[BaseRoute] = [
    Route("/auth/passkeys/register/options", registration_options, methods=["POST"]),
    Route("/auth/passkeys/register", register, methods=["POST"]),
    Route("/auth/passkeys", list_passkeys, methods=["GET"]),
    Route("/auth/passkeys/{passkey_id}", rename, methods=["PATCH"]),
    Route("/auth/passkeys/{passkey_id}", delete, methods=["DELETE"]),
]
