"""Per-request helpers shared by the API routes and the HTML pages."""

from __future__ import annotations

import contextlib
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from gatepass.authenticator import Identity
from gatepass.config import normalise_origin
from gatepass.core import Gatepass
from gatepass.csrf import CSRF_FORM_FIELD, CSRF_HEADER, SAFE_METHODS, check_csrf_token, check_origin
from gatepass.server.requests import client_ip, request_origin

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


def trusted_origins(request: Request) -> set[str]:
    """The server's own origin (as addressed), its issuer's, and the configured ones."""
    gp = gatepass(request)
    trusted = set(gp.settings.allowed_origins)
    own = request_origin(request, gp.settings.trusted_proxies)
    if own is not None:
        trusted.add(own)
    with contextlib.suppress(ValueError):  # an issuer need not be a URL
        trusted.add(normalise_origin(gp.settings.effective_issuer))
    return trusted


def enforce_origin(request: Request) -> None:
    check_origin(request.headers.get("origin"), trusted_origins(request))


async def authenticate(request: Request) -> Identity:
    gp = gatepass(request)
    return await gp.authenticator.authenticate(
        request.headers.get("authorization"),
        request.cookies.get(session_cookie_name(gp)),
    )


def enforce_csrf(request: Request, identity: Identity, fields: dict[str, Any] | None) -> None:
    """CSRF rules for a cookie-authenticated, state-changing request; Bearer needs none."""
    if identity.session is None or request.method in SAFE_METHODS:
        return
    enforce_origin(request)
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


def clear_session_cookie(response: Response, gp: Gatepass) -> None:
    response.delete_cookie(
        session_cookie_name(gp),
        path="/",
        secure=gp.settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
