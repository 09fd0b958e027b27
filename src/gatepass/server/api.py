"""JSON routes of the HTTP contract (``/auth/*``, health, metrics)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.authenticator import Identity
from gatepass.errors import (
    AuthenticationFailed,
    Overloaded,
    RequestError,
    StoreUnavailable,
)
from gatepass.freshness import SignInProof
from gatepass.keys import KEY_RELOAD_SECONDS
from gatepass.metrics import CONTENT_TYPE
from gatepass.server import pages, revocations
from gatepass.server.context import (
    authenticate,
    clear_session_cookie,
    enforce_csrf,
    enforce_origin,
    gatepass,
    ip_of,
    presented_device_cookie,
    presented_session_cookie,
    set_device_cookie,
    set_session_cookie,
    user_agent_of,
)
from gatepass.server.problems import problem
from gatepass.server.requests import is_form, read_fields, validate
from gatepass.stores.base import UserRecord
from gatepass.web import check_metrics_access

NO_STORE = {"Cache-Control": "no-store"}
#: Where a successful sign-in from the HTML form lands.
ACCOUNT_PAGE = "/account"

Text = Annotated[StrictStr, Field(max_length=4096)]
#: A refresh or link token: no length limit, so any string that is not a live
#: token gets that route's refusal (401 / 400), never a 422.
TokenText = StrictStr


class Body(BaseModel):
    # Unknown fields are ignored (forward compatibility); known ones are strict.
    model_config = ConfigDict(extra="ignore", frozen=True)


class RegisterIn(Body):
    email: Text
    password: Text


class LoginIn(Body):
    email: Text
    password: Text
    client: Literal["web", "mobile", "api"] = "web"


class RefreshIn(Body):
    refresh_token: TokenText


class PasswordIn(Body):
    current_password: Text
    new_password: Text


def iso_time(ts: float) -> str:
    """An instant as the JSON answers show it: ISO 8601 in UTC, with ``Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def user_json(user: UserRecord) -> dict[str, Any]:
    """A user as the contract shows it (login's ``user``)."""
    return {"id": user.id, "email": user.email, "roles": list(user.roles)}


def me_json(identity: Identity) -> dict[str, Any]:
    """The answer of ``GET /auth/me``: the user, whether its address is verified, how
    the caller authenticated, and when and how the user signed in (``auth_time`` in
    whole seconds, ``amr`` RFC 8176 values)."""
    user = identity.user
    return {
        **user_json(user),
        "email_verified": user.email_verified,
        "method": identity.method,
        "auth_time": int(identity.auth_time),
        "amr": list(identity.amr),
    }


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length != "0") or "transfer-encoding" in request.headers


async def mutating_identity(request: Request) -> tuple[Identity, dict[str, Any] | None]:
    """Authenticate a state-changing request, apply the CSRF rules, parse any body.

    A forged request is refused before its body is looked at. A body that is sent
    is parsed even where the route needs none, so a malformed one is refused (4xx)
    rather than silently ignored.
    """
    identity = await authenticate(request)
    if is_form(request):
        # An HTML form carries its CSRF token in the body, so the body comes first.
        fields = await read_fields(request)
        enforce_csrf(request, identity, fields)
        return identity, fields
    enforce_csrf(request, identity, None)
    return identity, (await read_fields(request) if has_body(request) else None)


async def fresh_identity(request: Request) -> tuple[Identity, dict[str, Any] | None]:
    """:func:`mutating_identity`, then the fresh sign-in check (403
    ``reauthentication_required``) of the routes that change factors or passkeys."""
    identity, fields = await mutating_identity(request)
    await gatepass(request).accounts.require_fresh(identity)
    return identity, fields


async def register(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(RegisterIn, fields)
    user = await gatepass(request).accounts.register(body.email, body.password, ip=ip_of(request))
    if user is None:
        # Mandatory verification: the same answer for a new and a taken address.
        return JSONResponse({"status": "verification_sent"}, status_code=202, headers=NO_STORE)
    return JSONResponse({"id": user.id, "email": user.email}, status_code=201, headers=NO_STORE)


async def login(request: Request) -> Response:
    form = is_form(request)
    try:
        return await _login(request, form)
    except (RequestError, Overloaded) as exc:
        if not form:
            raise
        return pages.render_login(request, error=exc)


async def _login(request: Request, form: bool) -> Response:
    gp = gatepass(request)
    fields = await read_fields(request)
    enforce_origin(request)
    if form:
        pages.check_form_token(request, fields)
    body = validate(LoginIn, fields)
    user = await gp.accounts.verify_password_login(
        body.email, body.password, ip_of(request), device_cookie=presented_device_cookie(request)
    )
    methods = await gp.second_factors.methods(user.id)
    if methods:
        # The password alone grants nothing to a user with a second factor.
        pending = await gp.second_factors.begin(user, body.client, methods)
        if form:
            return pages.render_second_factor(request, pending)
        return JSONResponse(pending.as_json(), headers=NO_STORE)
    return await grant_sign_in(request, user, body.client, gp.accounts.password_proof(), form=form)


async def grant_sign_in(
    request: Request, user: UserRecord, client: str, proof: SignInProof, *, form: bool = False
) -> Response:
    """What a finished sign-in answers (DESIGN §3): a token pair for ``mobile`` and
    ``api``; for ``web`` a new session (whatever session the request carried dies
    first) with its cookie, as JSON or, for an HTML form, a redirect to /account."""
    gp = gatepass(request)
    response: Response
    if client != "web":
        pair = await gp.accounts.start_token_family(
            user, ip=ip_of(request), user_agent=user_agent_of(request), proof=proof
        )
        response = JSONResponse(pair.as_json(), headers=NO_STORE)
        set_device_cookie(response, gp, user.email)
        return response
    issued = await gp.accounts.start_web_session(
        user,
        presented_cookie=presented_session_cookie(request),
        ip=ip_of(request),
        user_agent=user_agent_of(request),
        proof=proof,
    )
    if form:
        response = RedirectResponse(ACCOUNT_PAGE, status_code=303, headers=NO_STORE)
        pages.clear_form_token(response, request)
    else:
        payload = {"user": user_json(user), "csrf_token": issued.record.csrf_token}
        response = JSONResponse(payload, headers=NO_STORE)
    set_session_cookie(response, gp, issued.cookie_value)
    set_device_cookie(response, gp, user.email)
    return response


async def refresh(request: Request) -> Response:
    fields = await read_fields(request)
    enforce_origin(request)
    body = validate(RefreshIn, fields)
    pair = await gatepass(request).refresh_tokens.rotate(body.refresh_token)
    return JSONResponse(pair.as_json(), headers=NO_STORE)


async def jwks(request: Request) -> Response:
    ring = gatepass(request).keys
    await ring.refresh_if_stale()
    return JSONResponse(
        ring.jwks(),
        headers={"Cache-Control": f"public, max-age={KEY_RELOAD_SECONDS}"},
    )


async def me(request: Request) -> Response:
    identity = await authenticate(request)
    return JSONResponse(me_json(identity), headers=NO_STORE)


async def csrf(request: Request) -> Response:
    identity = await authenticate(request)
    if identity.session is None:
        # A Bearer caller has no session, and needs no CSRF token.
        raise AuthenticationFailed("CSRF tokens belong to cookie sessions.")
    return JSONResponse({"csrf_token": identity.session.csrf_token}, headers=NO_STORE)


async def logout(request: Request) -> Response:
    identity, _ = await mutating_identity(request)
    gp = gatepass(request)
    await gp.accounts.logout(identity)
    response = Response(status_code=204, headers=NO_STORE)
    if identity.session is not None:
        clear_session_cookie(response, gp)
    return response


async def logout_all(request: Request) -> Response:
    identity, _ = await mutating_identity(request)
    gp = gatepass(request)
    await gp.accounts.logout_all(identity)
    response = Response(status_code=204, headers=NO_STORE)
    if identity.session is not None:
        clear_session_cookie(response, gp)
    return response


async def list_sessions(request: Request) -> Response:
    identity = await authenticate(request)
    views = await gatepass(request).accounts.list_sessions(identity)
    return JSONResponse(
        [
            {
                "id": v.id,
                "kind": v.kind,
                "created_at": iso_time(v.created_at),
                "last_seen_at": iso_time(v.last_seen_at),
                "ip": v.ip,
                "user_agent": v.user_agent,
                "current": v.current,
            }
            for v in views
        ],
        headers=NO_STORE,
    )


async def delete_session(request: Request) -> Response:
    identity, _ = await mutating_identity(request)
    gp = gatepass(request)
    handle = request.path_params["session_id"]
    await gp.accounts.end_session(identity, handle)
    response = Response(status_code=204, headers=NO_STORE)
    if identity.session is not None and identity.session.handle == handle:
        clear_session_cookie(response, gp)
    return response


async def change_password(request: Request) -> Response:
    identity, fields = await mutating_identity(request)
    body = validate(PasswordIn, fields or {})
    gp = gatepass(request)
    issued = await gp.accounts.change_password(identity, body.current_password, body.new_password)
    response = Response(status_code=204, headers=NO_STORE)
    if issued is not None:
        set_session_cookie(response, gp, issued.cookie_value)
    return response


async def healthz(request: Request) -> Response:
    gp = gatepass(request)
    try:
        await gp.store.ping()
    except StoreUnavailable as exc:
        # Names the store (database, redis) for the operator; never the error text,
        # which may carry an address.
        return problem(503, f"The {exc.store or 'store'} is unreachable.")
    try:
        gp.bus.check_live()
    except StoreUnavailable:
        return problem(503, f"The event bus ({gp.bus.name}) is unreachable.")
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def metrics(request: Request) -> Response:
    gp = gatepass(request)
    check_metrics_access(gp.settings, request.headers.get("authorization"), ip_of(request))
    return Response(gp.metrics.render(), media_type=CONTENT_TYPE)


routes: list[BaseRoute] = [
    # The hot path first: Starlette tries routes in order.
    Route("/auth/me", me, methods=["GET"]),
    Route("/auth/register", register, methods=["POST"]),
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/refresh", refresh, methods=["POST"]),
    Route("/auth/csrf", csrf, methods=["GET"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/logout-all", logout_all, methods=["POST"]),
    Route("/auth/sessions", list_sessions, methods=["GET"]),
    Route("/auth/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/auth/password", change_password, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route(revocations.PATH, revocations.revocation_feed, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
