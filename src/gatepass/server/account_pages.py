"""HTML pages for sign-up, forgotten passwords and the links mail carries.

Every form posts back to its own page (``application/x-www-form-urlencoded``) with
the double-submit token of :func:`gatepass.server.pages.render_form`, and the
``Origin`` check of every unsafe request.

A link token is never rendered into a page nor left in the address bar (where
history, screenshots and ``Referer`` would keep it): ``GET /reset-password?token=T``
moves ``T`` into a short-lived ``HttpOnly`` cookie scoped to that page and answers
303 to the bare path; the page's form post reads the token from that cookie,
never from a field. The cookie is ``SameSite=Lax``, not ``Strict``: the first GET
is a top-level navigation from a mail client or webmail site, and a ``Strict``
cookie set by it would not come back with the redirect it ends in. GET never
changes state (mail scanners prefetch links): it only checks whether the link is
still live to choose the page.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gatepass.errors import (
    Conflict,
    CSRFFailed,
    InvalidLink,
    InvalidRequest,
    Overloaded,
    RateLimited,
    RequestError,
    UnsupportedMediaType,
)
from gatepass.links import (
    ADDRESS_PURPOSES,
    MAX_LINK_TOKEN_LENGTH,
    RESET_PASSWORD_PATH,
    VERIFY_EMAIL_PATH,
    LinkPurpose,
    describe_seconds,
)
from gatepass.server.context import enforce_origin, gatepass, ip_of, request_cookie, set_cookie
from gatepass.server.pages import (
    OVERLOADED_STATUS,
    PAGE_HEADERS,
    check_form_token,
    clear_form_token,
    render_form,
    render_page,
)
from gatepass.server.requests import is_form, read_fields, validate
from gatepass.web import AmbiguousCookie, CookieSpec

REGISTER_PATH = "/register"
FORGOT_PASSWORD_PATH = "/forgot-password"  # noqa: S105 - a path, not a password
LOGIN_PATH = "/login"
#: Longest a link token waits in its cookie for the page's form, whatever the link's TTL.
LINK_COOKIE_MAX_AGE = 3600
# What token_urlsafe produces; anything else is never written into a cookie.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+")
# The redirect that takes the token out of the URL sends no Referer onwards either.
_REDIRECT_HEADERS = {**PAGE_HEADERS, "Referrer-Policy": "no-referrer"}

Text = Annotated[StrictStr, Field(max_length=4096)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RegisterForm(_Form):
    email: Text
    password: Text


class EmailForm(_Form):
    email: Text


class NewPasswordForm(_Form):
    new_password: Text


def _link_cookie(request: Request, purpose: LinkPurpose) -> CookieSpec:
    """The cookie holding a link token on its way from the URL to the page's form:
    scoped to that page (so no ``__Host-`` prefix, which needs ``Path=/``), and
    living no longer than the link does."""
    settings = gatepass(request).settings
    if purpose is LinkPurpose.RESET_PASSWORD:
        path, base, ttl = RESET_PASSWORD_PATH, "gatepass_reset_link", settings.password_reset_ttl
    else:
        path, base, ttl = VERIFY_EMAIL_PATH, "gatepass_verify_link", settings.email_verify_ttl
    name = f"__Secure-{base}" if settings.cookie_secure else base
    return CookieSpec(name, min(ttl, LINK_COOKIE_MAX_AGE), settings.cookie_secure, path=path)


def _clear_link_cookie(response: Response, spec: CookieSpec) -> None:
    response.delete_cookie(
        spec.name, path=spec.path, secure=spec.secure, httponly=True, samesite=spec.samesite
    )


def _cookie_token(request: Request, spec: CookieSpec) -> str | None:
    try:
        token = request_cookie(request, spec.name)
    except AmbiguousCookie:  # one may have been tossed in by a sibling domain
        return None
    return token or None


def _move_token_to_cookie(request: Request, purpose: LinkPurpose, path: str) -> Response:
    """303 to the bare page, the link's token in its cookie (or the cookie cleared when
    the query holds no token of a shape we issue)."""
    spec = _link_cookie(request, purpose)
    response = RedirectResponse(path, status_code=303, headers=_REDIRECT_HEADERS)
    tokens = request.query_params.getlist("token")
    token = tokens[0] if len(tokens) == 1 else ""
    if 0 < len(token) <= MAX_LINK_TOKEN_LENGTH and _TOKEN_SHAPE.fullmatch(token):
        set_cookie(response, spec, token)
    else:
        _clear_link_cookie(response, spec)
    return response


async def _form_fields(request: Request) -> dict[str, Any]:
    """The fields of one of these pages' forms, after the CSRF checks."""
    if not is_form(request):
        raise UnsupportedMediaType("Send the form as application/x-www-form-urlencoded.")
    fields = await read_fields(request)
    enforce_origin(request)
    check_form_token(request, fields)
    return fields


def _problem_text(error: RequestError) -> list[str]:
    """An invalid form's messages: the error's detail and each field's problem."""
    lines = [error.detail]
    for problem in getattr(error, "problems", ()):
        lines.append(f"{problem.field}: {problem.message}")
    return lines


def _form_error(
    request: Request,
    template: str,
    error: RequestError | Overloaded,
    *,
    messages: dict[type[RequestError], str] | None = None,
    **context: object,
) -> Response:
    """The form again, with a message for ``error`` and its status."""
    headers: dict[str, str] = {}
    if isinstance(error, Overloaded):
        status, lines = OVERLOADED_STATUS, ["Too many requests at once. Try again in a moment."]
        headers["Retry-After"] = str(error.retry_after)
    else:
        status = error.status
        if isinstance(error, RateLimited):
            lines = ["Too many attempts. Try again later."]
            headers["Retry-After"] = str(error.retry_after)
        elif isinstance(error, CSRFFailed):
            lines = ["The form was not accepted (it may have expired). Please try again."]
        elif messages and type(error) in messages:
            lines = [messages[type(error)]]
        elif isinstance(error, InvalidRequest) and error.status == 422:
            lines = _problem_text(error)
        else:
            lines = ["The form was not accepted. Please try again."]
    response = render_form(request, template, status, errors=lines, **context)
    response.headers.update(headers)
    return response


# sign-up ----------------------------------------------------------------------------


async def register_page(request: Request) -> Response:
    return render_form(request, "register.html")


async def register_submit(request: Request) -> Response:
    gp = gatepass(request)
    email = ""
    try:
        fields = await _form_fields(request)
        value = fields.get("email")
        email = value if isinstance(value, str) else ""
        form = validate(RegisterForm, fields)
        await gp.accounts.register(form.email, form.password, ip=ip_of(request))
    except (RequestError, Overloaded) as exc:
        taken = "That address already has an account. Sign in, or reset its password."
        return _form_error(
            request, "register.html", exc, messages={Conflict: taken}, email=email[:254]
        )
    response: Response
    if gp.settings.email_verification == "none":
        response = RedirectResponse(LOGIN_PATH, status_code=303, headers=PAGE_HEADERS)
    else:
        # The same page for a new and a taken address: under mandatory verification
        # register() answers alike for both, and so must this page.
        response = render_page(
            request,
            "register.html",
            state="sent",
            email=form.email,
            mandatory=_mandatory(request),
        )
    clear_form_token(response, request)
    return response


# forgotten password -----------------------------------------------------------------


async def forgot_password_page(request: Request) -> Response:
    return render_form(request, "forgot_password.html")


async def forgot_password_submit(request: Request) -> Response:
    gp = gatepass(request)
    try:
        fields = await _form_fields(request)
        form = validate(EmailForm, fields)
        await gp.accounts.request_password_reset(form.email, ip=ip_of(request))
    except (RequestError, Overloaded) as exc:
        return _form_error(request, "forgot_password.html", exc)
    # One page whether or not the address has an account.
    expires_in = describe_seconds(gp.settings.password_reset_ttl)
    response = render_page(
        request, "forgot_password.html", state="sent", email=form.email, expires_in=expires_in
    )
    clear_form_token(response, request)
    return response


# the links mail carries -------------------------------------------------------------


async def reset_password_page(request: Request) -> Response:
    if "token" in request.query_params:
        return _move_token_to_cookie(request, LinkPurpose.RESET_PASSWORD, RESET_PASSWORD_PATH)
    token = _cookie_token(request, _link_cookie(request, LinkPurpose.RESET_PASSWORD))
    accounts = gatepass(request).accounts
    if token is None or not await accounts.link_is_live(token, LinkPurpose.RESET_PASSWORD):
        return render_page(request, "reset_password.html", state="expired")
    return render_form(request, "reset_password.html", state="form")


async def reset_password_submit(request: Request) -> Response:
    spec = _link_cookie(request, LinkPurpose.RESET_PASSWORD)
    response: Response
    try:
        fields = await _form_fields(request)
        form = validate(NewPasswordForm, fields)
        token = _cookie_token(request, spec)
        if token is None:
            raise InvalidLink()
        await gatepass(request).accounts.reset_password(token, form.new_password)
    except InvalidLink:
        response = render_page(request, "reset_password.html", 400, state="expired")
        _clear_link_cookie(response, spec)
        return response
    except (RequestError, Overloaded) as exc:
        # The link stays valid: the same form again, with what was wrong.
        return _form_error(request, "reset_password.html", exc, state="form")
    response = render_page(request, "reset_password.html", state="done")
    _clear_link_cookie(response, spec)
    clear_form_token(response, request)
    return response


async def _address_link_is_live(request: Request, token: str) -> bool:
    accounts = gatepass(request).accounts
    for purpose in ADDRESS_PURPOSES:
        if await accounts.link_is_live(token, purpose):
            return True
    return False


def _mandatory(request: Request) -> bool:
    return gatepass(request).settings.email_verification == "mandatory"


async def verify_email_page(request: Request) -> Response:
    if "token" in request.query_params:
        return _move_token_to_cookie(request, LinkPurpose.VERIFY_EMAIL, VERIFY_EMAIL_PATH)
    token = _cookie_token(request, _link_cookie(request, LinkPurpose.VERIFY_EMAIL))
    mandatory = _mandatory(request)
    if token is None or not await _address_link_is_live(request, token):
        return render_page(request, "verify_email.html", state="expired", mandatory=mandatory)
    return render_form(request, "verify_email.html", state="confirm", mandatory=mandatory)


async def verify_email_submit(request: Request) -> Response:
    spec = _link_cookie(request, LinkPurpose.VERIFY_EMAIL)
    mandatory = _mandatory(request)
    response: Response
    try:
        await _form_fields(request)
        token = _cookie_token(request, spec)
        if token is None:
            raise InvalidLink()
        user = await gatepass(request).accounts.verify_email(token)
    except InvalidLink:
        response = render_page(
            request, "verify_email.html", 400, state="expired", mandatory=mandatory
        )
        _clear_link_cookie(response, spec)
        return response
    except (RequestError, Overloaded) as exc:
        return _form_error(request, "verify_email.html", exc, state="confirm", mandatory=mandatory)
    response = render_page(request, "verify_email.html", state="done", email=user.email)
    _clear_link_cookie(response, spec)
    clear_form_token(response, request)
    return response


routes: list[BaseRoute] = [
    Route(REGISTER_PATH, register_page, methods=["GET"]),
    Route(REGISTER_PATH, register_submit, methods=["POST"]),
    Route(FORGOT_PASSWORD_PATH, forgot_password_page, methods=["GET"]),
    Route(FORGOT_PASSWORD_PATH, forgot_password_submit, methods=["POST"]),
    Route(RESET_PASSWORD_PATH, reset_password_page, methods=["GET"]),
    Route(RESET_PASSWORD_PATH, reset_password_submit, methods=["POST"]),
    Route(VERIFY_EMAIL_PATH, verify_email_page, methods=["GET"]),
    Route(VERIFY_EMAIL_PATH, verify_email_submit, methods=["POST"]),
]
