"""Server-rendered HTML pages: sign-in and account.

The pages use the same routes and rules as the JSON API: the sign-in form posts
to ``/auth/login`` with a double-submit CSRF token, and the account page's
buttons call ``/auth/*`` with the session's CSRF token in ``X-CSRF-Token``.
No session secret is ever rendered.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gatepass.errors import AuthenticationFailed, Overloaded, RateLimited, RequestError
from gatepass.server.context import authenticate, gatepass, set_cookie
from gatepass.web import login_csrf_cookie

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
    return env


def _render(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    env: Environment = request.app.state.templates
    html = env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def render_login(request: Request, *, error: RequestError | Overloaded | None = None) -> Response:
    """The sign-in page with a fresh double-submit token (also set as a cookie)."""
    gp = gatepass(request)
    token = secrets.token_urlsafe(LOGIN_CSRF_BYTES)
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
    elif error is not None:
        message = "The sign-in form was not accepted. Please try again."
    if isinstance(error, RequestError):
        status = error.status
    response = _render(request, "login.html", status, csrf_token=token, error=message)
    response.headers.update(headers)
    set_cookie(response, login_csrf_cookie(gp.settings), token)
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
    sessions = await gatepass(request).accounts.list_sessions(identity)
    return _render(
        request,
        "account.html",
        user=identity.user,
        sessions=sessions,
        csrf_token=identity.session.csrf_token,
    )


async def root(request: Request) -> Response:
    return RedirectResponse("/account", status_code=303)
