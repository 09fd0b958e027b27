"""Per-request helpers shared by the API routes and the HTML pages."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from gatepass.authenticator import Identity
from gatepass.core import Gatepass
from gatepass.csrf import CSRF_FORM_FIELD, CSRF_HEADER, check_origin
from gatepass.web import (
    AmbiguousCookie,
    CookieSpec,
    client_ip,
    cookie_value,
    device_cookie,
    join_cookie_headers,
    login_csrf_cookie,
    request_credentials,
    session_cookie,
)
from gatepass.web import enforce_csrf as enforce_csrf_rules


def gatepass(request: Request) -> Gatepass:
    return cast(Gatepass, request.app.state.gatepass)


def session_cookie_name(gp: Gatepass) -> str:
    return session_cookie(gp.settings).name


def login_csrf_cookie_name(gp: Gatepass) -> str:
    return login_csrf_cookie(gp.settings).name


def ip_of(request: Request) -> str | None:
    peer = request.client.host if request.client else None
    forwarded = request.headers.getlist("x-forwarded-for")
    return client_ip(peer, forwarded, gatepass(request).settings.trusted_proxies)


def user_agent_of(request: Request) -> str | None:
    return request.headers.get("user-agent")


def trusted_origins(request: Request) -> Collection[str]:
    """Origins allowed in ``Origin``: computed once per app from settings, never from
    the request (see :func:`gatepass.web.trusted_origins`)."""
    return cast(Collection[str], request.app.state.trusted_origins)


def enforce_origin(request: Request) -> None:
    check_origin(request.headers.get("origin"), trusted_origins(request))


def raw_cookie_header(request: Request) -> str:
    # Every Cookie header, not only the first one Starlette's request.cookies reads.
    return join_cookie_headers(request.headers.getlist("cookie"))


def request_cookie(request: Request, name: str) -> str | None:
    """The one value of cookie ``name``; :class:`AmbiguousCookie` when sent twice."""
    return cookie_value(raw_cookie_header(request), name)


def presented_session_cookie(request: Request) -> str | None:
    """The session cookie, or ``None`` when absent or ambiguous (two values are no
    valid value: the one a sibling domain tossed in must not pick the session)."""
    try:
        return request_cookie(request, session_cookie_name(gatepass(request)))
    except AmbiguousCookie:
        return None


async def authenticate(request: Request) -> Identity:
    gp = gatepass(request)
    authorization, cookie = request_credentials(
        request.headers.get("authorization"),
        raw_cookie_header(request),
        session_cookie_name(gp),
    )
    return await gp.authenticator.authenticate(authorization, cookie)


def enforce_csrf(request: Request, identity: Identity, fields: dict[str, Any] | None) -> None:
    """CSRF rules for a state-changing request (see :func:`gatepass.web.enforce_csrf`)."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and fields is not None:
        value = fields.get(CSRF_FORM_FIELD)
        presented = value if isinstance(value, str) else None
    enforce_csrf_rules(
        request.method,
        request.headers.get("origin"),
        trusted_origins(request),
        session_csrf_token=identity.session.csrf_token if identity.session else None,
        presented_token=presented,
    )


def set_cookie(response: Response, spec: CookieSpec, value: str) -> None:
    response.set_cookie(
        spec.name,
        value,
        max_age=spec.max_age,
        path=spec.path,
        secure=spec.secure,
        httponly=spec.httponly,
        samesite=spec.samesite,
    )


def set_session_cookie(response: Response, gp: Gatepass, cookie_value: str) -> None:
    set_cookie(response, session_cookie(gp.settings), cookie_value)


def device_cookie_name(gp: Gatepass) -> str:
    return device_cookie(gp.settings).name


def presented_device_cookie(request: Request) -> str | None:
    """The request's device cookie, or ``None`` when absent or sent twice."""
    try:
        return request_cookie(request, device_cookie_name(gatepass(request)))
    except AmbiguousCookie:
        return None


def set_device_cookie(response: Response, gp: Gatepass, account: str) -> None:
    """Trust this device for ``account`` from now on (set only by a sign-in that granted
    a session or a token pair)."""
    set_cookie(response, device_cookie(gp.settings), gp.devices.issue(account))


def clear_session_cookie(response: Response, gp: Gatepass) -> None:
    spec = session_cookie(gp.settings)
    response.delete_cookie(
        spec.name,
        path=spec.path,
        secure=spec.secure,
        httponly=spec.httponly,
        samesite=spec.samesite,
    )
