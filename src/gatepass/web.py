"""Framework-neutral web rules: the server's own origins, cookie names and flags,
cookies read strictly, the hybrid credential choice, CSRF, the client's address
behind trusted proxies, error documents, and who may read ``/metrics``.

Nothing here looks at a request object: callers pass plain request facts (method,
raw header values, the peer address), so the auth server and every framework
adapter apply the same rules.

* **Own origin.** It comes from configuration (``GATEPASS_PUBLIC_URL``, else the
  issuer), never from ``Host``: a DNS-rebinding page names itself in both ``Host``
  and ``Origin``, so trusting ``Host`` would trust the attacker.
* **Ambiguous cookies.** A cookie set from a sibling domain (cookie tossing) arrives
  next to the real one under the same name; which one a framework keeps is an
  accident of parsing, so two values count as no valid value at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gatepass._addresses import is_loopback_address as is_loopback_address
from gatepass._addresses import is_loopback_host as is_loopback_host
from gatepass._compare import constant_time_equals
from gatepass.config import ProxyNet, Settings, origin_of
from gatepass.csrf import SAFE_METHODS, check_csrf_token, check_origin
from gatepass.devices import DEVICE_COOKIE_MAX_AGE
from gatepass.errors import (
    AuthenticationFailed,
    FieldProblem,
    GatepassError,
    Overloaded,
    PermissionDenied,
    RateLimited,
    RequestError,
    StoreUnavailable,
)

#: Every spelling of the loopback host a browser may put in an ``Origin``.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Addresses that listen on every interface (named here to warn, not to bind).
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})  # noqa: S104
_BEARER = "bearer "


class AmbiguousCookie(ValueError):
    """A request carried the same cookie name more than once."""


def _loopback_spellings(origin: str) -> set[str]:
    scheme, _, rest = origin.partition("://")
    host, port = rest, ""
    if rest.startswith("["):
        end = rest.index("]") + 1
        host, port = rest[:end], rest[end:]
    elif ":" in rest:
        host, _, number = rest.partition(":")
        port = f":{number}"
    if not is_loopback_host(host):
        return set()
    return {f"{scheme}://{name}{port}" for name in LOOPBACK_HOSTS}


def own_origins(settings: Settings) -> frozenset[str]:
    """The server's own origins, from configuration alone.

    The public URL's origin and a configured issuer's (when it is a URL); when such
    a host is a loopback address or ``localhost``, every loopback spelling of it
    with the same scheme and port.
    """
    found: set[str] = set()
    urls = [settings.effective_public_url]
    if settings.issuer is not None:  # the derived http://HOST:PORT is no one's choice
        urls.append(settings.issuer)
    for url in urls:
        try:
            origin = origin_of(url)
        except ValueError:  # an issuer need not be a URL
            continue
        found.add(origin)
        found |= _loopback_spellings(origin)
    return frozenset(found)


def trusted_origins(settings: Settings) -> frozenset[str]:
    """Origins an ``Origin`` header may name: the own ones and ``GATEPASS_ALLOWED_ORIGINS``."""
    return own_origins(settings) | frozenset(settings.allowed_origins)


def wildcard_bind_warning(settings: Settings) -> str | None:
    """A warning when the server listens on every address but its own origin is
    only the guessed ``http://HOST:PORT``, which no browser will send."""
    if settings.host.lower() not in WILDCARD_HOSTS:
        return None
    if settings.issuer is not None or settings.public_url is not None:
        return None
    return (
        f"listening on {settings.host} without GATEPASS_PUBLIC_URL or GATEPASS_ISSUER: "
        f"the own origin is taken to be {settings.effective_public_url}, so browsers' "
        "requests naming another origin are refused; set GATEPASS_PUBLIC_URL to the "
        "URL clients use"
    )


def cookie_values(header: str | None, name: str) -> list[str]:
    """Every value a raw ``Cookie`` header gives the cookie ``name``, in order."""
    if not header:
        return []
    values: list[str] = []
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if sep and key.strip() == name:
            values.append(value.strip())
    return values


def cookie_value(header: str | None, name: str) -> str | None:
    """The one value of cookie ``name``; :class:`AmbiguousCookie` when there are more."""
    values = cookie_values(header, name)
    if len(values) > 1:
        raise AmbiguousCookie(name)
    return values[0] if values else None


def check_metrics_access(
    settings: Settings, authorization: str | None, client_address: str | None
) -> None:
    """Who may read ``/metrics``.

    With ``GATEPASS_METRICS_TOKEN``: exactly ``Authorization: Bearer <token>``
    (:class:`AuthenticationFailed` otherwise), from any address. Without it: a
    client whose address (after trusted proxies) is loopback
    (:class:`PermissionDenied` otherwise).
    """
    if settings.metrics_token is not None:
        expected = settings.metrics_token.get_secret_value()
        if authorization is None:
            raise AuthenticationFailed("Metrics need a bearer token.")
        presented = ""
        if authorization[: len(_BEARER)].lower() == _BEARER:
            presented = authorization[len(_BEARER) :].strip()
        if not constant_time_equals(expected, presented):
            raise AuthenticationFailed("Invalid metrics token.", token_sent=True)
        return
    if not is_loopback_address(client_address):
        raise PermissionDenied("Metrics are served to loopback clients only.")


# cookies ------------------------------------------------------------------------

SESSION_COOKIE_SECURE = "__Host-gatepass_session"
SESSION_COOKIE_DEV = "gatepass_session"
DEVICE_COOKIE_SECURE = "__Host-gatepass_device"
DEVICE_COOKIE_DEV = "gatepass_device"
LOGIN_CSRF_COOKIE_SECURE = "__Host-gatepass_login_csrf"
LOGIN_CSRF_COOKIE_DEV = "gatepass_login_csrf"
LOGIN_CSRF_MAX_AGE = 3600


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """Name and flags of one of gatepass's cookies: ``HttpOnly; SameSite=Lax; Path=/``,
    ``Secure`` (and the ``__Host-`` prefix) unless in dev mode, never a ``Domain``."""

    name: str
    max_age: int
    secure: bool
    path: str = "/"
    httponly: bool = True
    samesite: Literal["lax"] = "lax"


def session_cookie(settings: Settings) -> CookieSpec:
    """The session cookie; it lives as long as the absolute timeout at most."""
    name = SESSION_COOKIE_SECURE if settings.cookie_secure else SESSION_COOKIE_DEV
    return CookieSpec(name, settings.session_absolute_timeout, settings.cookie_secure)


def device_cookie(settings: Settings) -> CookieSpec:
    name = DEVICE_COOKIE_SECURE if settings.cookie_secure else DEVICE_COOKIE_DEV
    return CookieSpec(name, DEVICE_COOKIE_MAX_AGE, settings.cookie_secure)


def login_csrf_cookie(settings: Settings) -> CookieSpec:
    name = LOGIN_CSRF_COOKIE_SECURE if settings.cookie_secure else LOGIN_CSRF_COOKIE_DEV
    return CookieSpec(name, LOGIN_CSRF_MAX_AGE, settings.cookie_secure)


def join_cookie_headers(values: Sequence[str]) -> str:
    """Every ``Cookie`` header line as one (a second line must not hide a duplicate)."""
    return "; ".join(values)


# the hybrid credential ------------------------------------------------------------


def request_credentials(
    authorization: str | None, cookie_header: str | None, session_cookie_name: str
) -> tuple[str | None, str | None]:
    """The ``(authorization, session cookie)`` pair the authenticator judges.

    A request with an ``Authorization`` header is judged on it alone, so the cookie
    is not even read; without one, a session cookie sent twice is no credential at
    all (:class:`AuthenticationFailed`), never either of its values.
    """
    if authorization is not None:
        return authorization, None
    try:
        return None, cookie_value(cookie_header, session_cookie_name)
    except AmbiguousCookie:
        raise AuthenticationFailed() from None


def enforce_csrf(
    method: str,
    origin: str | None,
    trusted: Collection[str],
    *,
    session_csrf_token: str | None,
    presented_token: str | None,
) -> None:
    """The CSRF rules for a request (:class:`~gatepass.errors.CSRFFailed` when broken).

    Safe methods pass. On an unsafe one, ``Origin``, when present, must be trusted
    whatever the credential; a cookie session (``session_csrf_token`` given) also
    needs its token, from the ``X-CSRF-Token`` header or the form field. A Bearer
    request (``None``) carries no ambient credential, so it needs no token.
    """
    if method.upper() in SAFE_METHODS:
        return
    check_origin(origin, trusted)
    if session_csrf_token is not None:
        check_csrf_token(session_csrf_token, presented_token)


# the client's address -------------------------------------------------------------


def _is_trusted(address: str | None, proxies: Sequence[ProxyNet]) -> bool:
    if address is None or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_ip(
    peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[ProxyNet]
) -> str | None:
    """The client's address: ``peer``, unless the peer is a trusted proxy, in which
    case the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    ``forwarded_for`` holds every header line: a proxy may add its own line rather
    than append to the client's, and the client's first line must not be taken for
    the proxy's word.
    """
    if not _is_trusted(peer, proxies):
        return peer
    forwarded = ", ".join(forwarded_for)
    for candidate in reversed([part.strip() for part in forwarded.split(",")]):
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return peer
        if not _is_trusted(candidate, proxies):
            return candidate
    return peer


# errors as RFC 9457 documents -----------------------------------------------------

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Seconds a client is asked to wait after a store outage.
STORE_RETRY_AFTER = 5
STATUS_TITLES: Mapping[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """An error answer: status, headers and an RFC 9457 body of fixed, safe text."""

    status: int
    headers: Mapping[str, str]
    body: Mapping[str, Any]


def problem_body(
    status: int,
    detail: str | None = None,
    problems: Sequence[FieldProblem] = (),
    *,
    code: str | None = None,
) -> dict[str, Any]:
    title = STATUS_TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail or title,
    }
    if code is not None:
        body["code"] = code
    if problems:
        body["errors"] = [{"field": p.field, "message": p.message} for p in problems]
    return body


def www_authenticate(exc: AuthenticationFailed) -> str:
    """The challenge of a 401: ``error="invalid_token"`` when a token was sent."""
    return 'Bearer error="invalid_token"' if exc.token_sent else "Bearer"


def problem_for(exc: GatepassError) -> Problem | None:
    """The answer for an error a request caused, or ``None`` for one that is a bug
    (the caller answers 500 without its text). The detail of a
    :class:`~gatepass.errors.RequestError` is fixed text written for clients."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestError):
        if isinstance(exc, AuthenticationFailed):
            headers["WWW-Authenticate"] = www_authenticate(exc)
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        problems = getattr(exc, "problems", ())
        body = problem_body(exc.status, exc.detail, problems, code=exc.code)
        return Problem(exc.status, headers, body)
    if isinstance(exc, Overloaded):
        detail = "Too many sign-ins at once. Try again shortly."
        return Problem(503, {"Retry-After": str(exc.retry_after)}, problem_body(503, detail))
    if isinstance(exc, StoreUnavailable):
        detail = "A store is unreachable. Try again later."
        retry = {"Retry-After": str(STORE_RETRY_AFTER)}
        return Problem(503, retry, problem_body(503, detail))
    return None
