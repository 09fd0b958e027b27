"""Server-rendered HTML pages: sign-in and account, and the helpers every page shares.

The pages use the same routes and rules as the JSON API: the sign-in form posts
to ``/auth/login`` with a double-submit CSRF token, and the account page's
buttons call ``/auth/*`` with the session's CSRF token in ``X-CSRF-Token``.
Anonymous forms (sign-in, and those of :mod:`gatepass.server.account_pages`)
carry the double-submit token: :func:`render_form` sets it as a cookie and a
field, :func:`check_form_token` compares them. No session secret is ever rendered.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gatepass._compare import constant_time_equals
from gatepass.csrf import CSRF_FORM_FIELD
from gatepass.device_names import device_name
from gatepass.errors import (
    AuthenticationFailed,
    CSRFFailed,
    EmailNotVerified,
    Overloaded,
    RateLimited,
    RequestError,
)
from gatepass.second_factor import PendingSignIn
from gatepass.server.context import (
    authenticate,
    gatepass,
    login_csrf_cookie_name,
    request_cookie,
    set_cookie,
)
from gatepass.web import AmbiguousCookie, login_csrf_cookie

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
LOGIN_CSRF_BYTES = 32
PAGE_HEADERS = {"Cache-Control": "no-store"}
OVERLOADED_STATUS = 503


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True),
        auto_reload=False,
    )
    env.filters["when"] = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    env.filters["device_name"] = device_name
    return env


def render_page(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    """Template ``name`` as an uncached HTML page."""
    env: Environment = request.app.state.templates
    html = env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def render_form(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    """A page with an anonymous form: a fresh double-submit token as ``csrf_token``
    in the template and as the cookie :func:`check_form_token` compares it with."""
    token = secrets.token_urlsafe(LOGIN_CSRF_BYTES)
    response = render_page(request, name, status, csrf_token=token, **context)
    set_cookie(response, login_csrf_cookie(gatepass(request).settings), token)
    return response


def check_form_token(request: Request, fields: dict[str, Any]) -> None:
    """Anonymous HTML forms carry a double-submit token: the form field must equal the
    cookie set with the form, so another site cannot post them in a victim's browser
    (for sign-in: sign the victim into the attacker's account)."""
    try:
        expected = request_cookie(request, login_csrf_cookie_name(gatepass(request)))
    except AmbiguousCookie:  # a second value may have been tossed in by a sibling domain
        raise CSRFFailed("Missing or invalid CSRF token.") from None
    presented = fields.get(CSRF_FORM_FIELD)
    if not expected or not isinstance(presented, str):
        raise CSRFFailed("Missing or invalid CSRF token.")
    if not constant_time_equals(expected, presented):
        raise CSRFFailed("Missing or invalid CSRF token.")


def clear_form_token(response: Response, request: Request) -> None:
    """Drop the double-submit cookie once its form has done its work."""
    spec = login_csrf_cookie(gatepass(request).settings)
    response.delete_cookie(spec.name, path=spec.path, secure=spec.secure)


def render_login(request: Request, *, error: RequestError | Overloaded | None = None) -> Response:
    """The sign-in page with a fresh double-submit token (also set as a cookie)."""
    message = None
    status = 200
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        message = "Too many attempts. Try again later."
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, Overloaded):
        message = "Too many sign-ins at once. Try again in a moment."
        headers["Retry-After"] = str(error.retry_after)
        status = OVERLOADED_STATUS
    elif isinstance(error, AuthenticationFailed):
        message = "Invalid email or password."
    elif isinstance(error, EmailNotVerified):
        message = "Confirm your address first: we sent you a new link."
    elif error is not None:
        message = "The sign-in form was not accepted. Please try again."
    if isinstance(error, RequestError):
        status = error.status
    response = render_form(request, "login.html", status, error=message)
    response.headers.update(headers)
    return response


def render_second_factor(
    request: Request,
    pending: PendingSignIn,
    *,
    error: RequestError | None = None,
) -> Response:
    """The second step of a sign-in by form: a code (TOTP or recovery code) or a
    passkey, for the pending sign-in ``pending`` (its ``mfa_token`` goes in the form:
    it is good for this one sign-in only, for minutes)."""
    message = None
    headers: dict[str, str] = {}
    status = 200
    if isinstance(error, RateLimited):
        message = "Too many attempts. Try again later."
        headers["Retry-After"] = str(error.retry_after)
    elif error is not None:
        message = "That code did not work. Try again."
    if error is not None:
        status = error.status
    response = render_form(
        request,
        "second_factor.html",
        status,
        error=message,
        mfa_token=pending.mfa_token,
        methods=pending.methods,
    )
    response.headers.update(headers)
    return response


async def login_page(request: Request) -> Response:
    return render_login(request)


async def account_page(request: Request) -> Response:
    try:
        identity = await authenticate(request)
    except AuthenticationFailed:
        return RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    if identity.session is None:
        return RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    gp = gatepass(request)
    sessions = await gp.accounts.list_sessions(identity)
    return render_page(
        request,
        "account.html",
        user=identity.user,
        sessions=sessions,
        factors=await gp.factors.summary(identity.user.id),
        passkeys=await gp.passkeys.list(identity.user.id),
        csrf_token=identity.session.csrf_token,
    )


async def root(request: Request) -> Response:
    return RedirectResponse("/account", status_code=303)
