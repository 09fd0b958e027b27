"""Per-request helpers shared by the API routes and the HTML pages."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from gatepass.authenticator import Identity
from gatepass.core import Gatepass
from gatepass.csrf import CSRF_FORM_FIELD, CSRF_HEADER, SAFE_METHODS, check_csrf_token, check_origin
from gatepass.devices import DEVICE_COOKIE_MAX_AGE
from gatepass.errors import AuthenticationFailed
from gatepass.server.requests import client_ip
from gatepass.web import AmbiguousCookie, cookie_value

DEVICE_COOKIE_SECURE = "__Host-gatepass_device"
DEVICE_COOKIE_DEV = "gatepass_device"
SESSION_COOKIE_SECURE = "__Host-gatepass_session"
SESSION_COOKIE_DEV = "gatepass_session"
LOGIN_CSRF_COOKIE_SECURE = "__Host-gatepass_login_csrf"
LOGIN_CSRF_COOKIE_DEV = "gatepass_login_csrf"
LOGIN_CSRF_MAX_AGE = 3600


def gatepass(request: Request) -> Gatepass:
    return cast(Gatepass, request.app.state.gatepass)


def session_cookie_name(gp: Gatepass) -> str:
    return SESSION_COOKIE_SECURE if gp.settings.cookie_secure else SESSION_COOKIE_DEV


def login_csrf_cookie_name(gp: Gatepass) -> str:
    return LOGIN_CSRF_COOKIE_SECURE if gp.settings.cookie_secure else LOGIN_CSRF_COOKIE_DEV


def ip_of(request: Request) -> str | None:
    return client_ip(request, gatepass(request).settings.trusted_proxies)


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
    return "; ".join(request.headers.getlist("cookie"))


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
    authorization = request.headers.get("authorization")
    cookie = None
    if authorization is None:  # a Bearer request is judged on its header alone
        try:
            cookie = request_cookie(request, session_cookie_name(gp))
        except AmbiguousCookie:
            raise AuthenticationFailed() from None
    return await gp.authenticator.authenticate(authorization, cookie)


def enforce_csrf(request: Request, identity: Identity, fields: dict[str, Any] | None) -> None:
    """CSRF rules for a state-changing request: ``Origin``, when present, must be
    trusted whatever the credential; a cookie session needs its CSRF token too."""
    if request.method in SAFE_METHODS:
        return
    enforce_origin(request)
    if identity.session is None:  # Bearer: no ambient credential, no token needed
        return
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and fields is not None:
        value = fields.get(CSRF_FORM_FIELD)
        presented = value if isinstance(value, str) else None
    check_csrf_token(identity.session.csrf_token, presented)


def set_session_cookie(response: Response, gp: Gatepass, cookie_value: str) -> None:
    response.set_cookie(
        session_cookie_name(gp),
        cookie_value,
        max_age=gp.settings.session_absolute_timeout,
        path="/",
        secure=gp.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def device_cookie_name(gp: Gatepass) -> str:
    return DEVICE_COOKIE_SECURE if gp.settings.cookie_secure else DEVICE_COOKIE_DEV


def presented_device_cookie(request: Request) -> str | None:
    """The request's device cookie, or ``None`` when absent or sent twice."""
    try:
        return request_cookie(request, device_cookie_name(gatepass(request)))
    except AmbiguousCookie:
        return None


def set_device_cookie(response: Response, gp: Gatepass, account: str) -> None:
    """Trust this device for ``account`` from now on (set only by a sign-in that granted
    a session or a token pair)."""
    response.set_cookie(
        device_cookie_name(gp),
        gp.devices.issue(account),
        max_age=DEVICE_COOKIE_MAX_AGE,
        path="/",
        secure=gp.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, gp: Gatepass) -> None:
    response.delete_cookie(
        session_cookie_name(gp),
        path="/",
        secure=gp.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
