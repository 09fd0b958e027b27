"""gatepass inside any Starlette (or plain ASGI) application: embedded mode.

* :func:`gatepass_lifespan` opens a :class:`~gatepass.core.Gatepass` when the app
  starts (or takes one already open) and keeps it on ``app.state``, with what
  gatepass's own route endpoints read there;
* :class:`GatepassMiddleware` (pure ASGI) authenticates every request by the hybrid
  rules and fills ``request.user`` (a :class:`GatepassUser`) and ``request.auth``
  (scopes ``"authenticated"`` plus the user's roles, so Starlette's ``@requires``
  works). A request with no credential at all is anonymous; a bad one is 401 at
  once, never a fallback from a bad Bearer token to the cookie. A
  cookie-authenticated unsafe request needs its CSRF token and a trusted
  ``Origin`` (403 otherwise); a store that cannot be reached is 503;
* :func:`install` registers the exception handlers that keep every such answer an
  ``application/problem+json`` document (and turn ``@requires``' 403 for an
  anonymous caller into the 401 it is).

The rules themselves live in :mod:`gatepass.web` and the authenticator; this module
only reads request facts off the ASGI scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qsl

from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatepass.authenticator import Identity
from gatepass.clock import Clock
from gatepass.config import Settings
from gatepass.core import PRUNE_INTERVAL_SECONDS, Gatepass
from gatepass.csrf import CSRF_FORM_FIELD, CSRF_HEADER, SAFE_METHODS, check_origin
from gatepass.errors import (
    AuthenticationFailed,
    GatepassError,
    PayloadTooLarge,
    StoreUnavailable,
)
from gatepass.passwords import PasswordHasher
from gatepass.server.pages import make_environment
from gatepass.server.problems import problem, problem_response
from gatepass.web import (
    cookie_values,
    enforce_csrf,
    join_cookie_headers,
    problem_for,
    request_credentials,
    session_cookie,
    trusted_origins,
)

logger = logging.getLogger("gatepass.integrations")

#: Scope every authenticated caller holds, for ``@requires("authenticated")``.
AUTHENTICATED = "authenticated"
#: A form body read by the middleware for its ``csrf_token`` field is held in memory
#: (then handed on to the app); beyond this it is refused rather than buffered.
MAX_FORM_BYTES = 64 * 1024
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


# the principal ------------------------------------------------------------------


class GatepassUser(BaseUser):
    """``request.user`` of an authenticated request: Starlette's user protocol over a
    gatepass :class:`~gatepass.authenticator.Identity` (:attr:`principal`)."""

    __slots__ = ("principal",)

    def __init__(self, principal: Identity) -> None:
        self.principal = principal

    def __repr__(self) -> str:
        return f"GatepassUser(id={self.principal.user_id!r}, method={self.principal.method!r})"

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.principal.user.email

    @property
    def identity(self) -> str:
        """The user's ID (Starlette's ``identity`` is a string)."""
        return self.principal.user_id

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    @property
    def roles(self) -> tuple[str, ...]:
        return self.principal.roles

    @property
    def method(self) -> str:
        return self.principal.method


def credentials_for(identity: Identity) -> AuthCredentials:
    """``request.auth``: ``"authenticated"`` and every role of the caller."""
    return AuthCredentials([AUTHENTICATED, *identity.roles])


# the Gatepass instance on app.state ----------------------------------------------


def gatepass_of(app: Any) -> Gatepass:
    """The instance :func:`gatepass_lifespan` put on ``app.state``."""
    gp = getattr(app.state, "gatepass", None)
    if not isinstance(gp, Gatepass):
        raise RuntimeError(
            "no Gatepass on app.state: use gatepass_lifespan(...) as the app's lifespan "
            "(or nest it in yours)"
        )
    return gp


def _check_handlers(app: Any) -> None:
    handlers = getattr(app, "exception_handlers", None)
    if handlers is not None and GatepassError not in handlers:
        # Without them an error raised in a route or a dependency would be a bare 500.
        raise RuntimeError(
            "gatepass's exception handlers are not installed: call install(app) "
            "before the app starts"
        )


class GatepassLifespan:
    """Opens gatepass with the app and closes it after; see :func:`gatepass_lifespan`."""

    def __init__(
        self,
        settings: Settings | None,
        app: Any | None,
        *,
        gatepass: Gatepass | None,
        clock: Clock,
        hasher: PasswordHasher | None,
        prune_interval: float | None,
    ) -> None:
        if (settings is None) == (gatepass is None):
            raise TypeError("gatepass_lifespan needs settings or an opened Gatepass (not both)")
        self._settings = settings
        self._app = app
        self._gatepass = gatepass
        self._clock = clock
        self._hasher = hasher
        self._prune_interval = prune_interval
        self._stack: AsyncExitStack | None = None

    @asynccontextmanager
    async def run(self, app: Any) -> AsyncIterator[Gatepass]:
        """Open (or take) the instance, publish it on ``app.state``, yield it."""
        _check_handlers(app)
        owned = self._gatepass is None
        if self._gatepass is not None:
            gp = self._gatepass
        else:
            settings = cast(Settings, self._settings)
            gp = await Gatepass.open(settings, clock=self._clock, hasher=self._hasher)
        app.state.gatepass = gp
        # What the server's route endpoints read (gatepass.server.context): computed
        # once from configuration, never from a request's Host header.
        app.state.trusted_origins = trusted_origins(gp.settings)
        app.state.templates = make_environment()
        pruning: asyncio.Future[None] | None = None
        if owned and self._prune_interval is not None:
            pruning = asyncio.ensure_future(gp.prune_forever(self._prune_interval))
        try:
            yield gp
        finally:
            if pruning is not None:
                pruning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning
            if owned:
                await gp.close()

    def __call__(self, app: Any) -> AbstractAsyncContextManager[None]:
        """The Starlette/FastAPI lifespan protocol: ``Starlette(lifespan=...)``."""
        return self._as_lifespan(app)

    @asynccontextmanager
    async def _as_lifespan(self, app: Any) -> AsyncIterator[None]:
        async with self.run(app):
            yield None  # no lifespan state: the instance lives on app.state

    async def __aenter__(self) -> Gatepass:
        if self._app is None:
            raise TypeError("nested use needs the app: gatepass_lifespan(settings, app)")
        stack = AsyncExitStack()
        gp = await stack.enter_async_context(self.run(self._app))
        self._stack = stack
        return gp

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)  # type: ignore[arg-type]


def gatepass_lifespan(
    settings: Settings | None = None,
    app: Any | None = None,
    *,
    gatepass: Gatepass | None = None,
    clock: Clock = time.time,
    hasher: PasswordHasher | None = None,
    prune_interval: float | None = PRUNE_INTERVAL_SECONDS,
) -> GatepassLifespan:
    """gatepass's part of an app's lifespan.

    As the app's own: ``Starlette(lifespan=gatepass_lifespan(settings))``. Nested in
    yours (it yields the open instance)::

        @asynccontextmanager
        async def lifespan(app):
            async with gatepass_lifespan(settings, app) as gp:
                yield

    Pass ``gatepass=`` instead of settings to serve an instance opened elsewhere
    (its owner closes it). An instance the lifespan opened is pruned of expired rows
    every ``prune_interval`` seconds (``None``: never) and closed at shutdown.
    """
    return GatepassLifespan(
        settings,
        app,
        gatepass=gatepass,
        clock=clock,
        hasher=hasher,
        prune_interval=prune_interval,
    )


# authenticating one request -----------------------------------------------------


def _cookie_header(headers: Headers) -> str:
    # Every Cookie line: a second one must not hide a duplicate session cookie.
    return join_cookie_headers(headers.getlist("cookie"))


async def authenticate_headers(gp: Gatepass, headers: Headers) -> Identity | None:
    """The caller behind a request's headers, ``None`` when it sent no credential at
    all (no ``Authorization`` header, no session cookie); a bad credential raises
    :class:`~gatepass.errors.AuthenticationFailed`, whatever else was sent."""
    authorization, cookie = request_credentials(
        headers.get("authorization"), _cookie_header(headers), session_cookie(gp.settings).name
    )
    if authorization is None and cookie is None:
        return None
    return await gp.authenticator.authenticate(authorization, cookie)


def check_request_csrf(
    identity: Identity,
    method: str,
    headers: Headers,
    trusted: Collection[str],
    form_token: str | None = None,
) -> None:
    """The CSRF rules (:func:`gatepass.web.enforce_csrf`) for an authenticated
    request: ``Origin`` on every unsafe one, and the session's token on a
    cookie-authenticated one, from ``X-CSRF-Token`` or else ``form_token``."""
    presented = headers.get(CSRF_HEADER)
    enforce_csrf(
        method,
        headers.get("origin"),
        trusted,
        session_csrf_token=identity.session.csrf_token if identity.session else None,
        presented_token=presented if presented is not None else form_token,
    )


def needs_csrf_token(identity: Identity, method: str, headers: Headers) -> bool:
    """A cookie-authenticated unsafe request that did not send ``X-CSRF-Token``."""
    return (
        identity.session is not None
        and method.upper() not in SAFE_METHODS
        and headers.get(CSRF_HEADER) is None
    )


def is_urlencoded_form(headers: Headers) -> bool:
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == FORM_MEDIA_TYPE


def clears_session_cookie(exc: GatepassError, gp: Gatepass, headers: Headers) -> bool:
    """A 401 judged on the session cookie alone: the browser is told to drop it, so
    an expired session does not refuse every later (public) page too."""
    if not isinstance(exc, AuthenticationFailed) or headers.get("authorization") is not None:
        return False
    return bool(cookie_values(_cookie_header(headers), session_cookie(gp.settings).name))


def error_response(exc: GatepassError, gp: Gatepass | None, headers: Headers) -> Response:
    """The problem+json answer for ``exc`` (re-raised when it is a bug, not a refusal)."""
    answer = problem_for(exc)
    if answer is None:
        raise exc
    if isinstance(exc, StoreUnavailable):
        logger.error("store unavailable: %s", exc)
    response = problem_response(answer)
    if gp is not None and clears_session_cookie(exc, gp, headers):
        spec = session_cookie(gp.settings)
        response.delete_cookie(
            spec.name,
            path=spec.path,
            secure=spec.secure,
            httponly=spec.httponly,
            samesite=spec.samesite,
        )
    return response


# the middleware -----------------------------------------------------------------


async def _read_form_token(receive: Receive) -> tuple[str | None, list[Message]]:
    """The ``csrf_token`` field of an urlencoded body, and the messages read, so the
    app can be handed the same body afterwards."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise PayloadTooLarge("Request body too large.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        fields = parse_qsl(
            b"".join(chunks).decode("utf-8"), keep_blank_values=True, max_num_fields=100
        )
    except ValueError:
        return None, messages  # not a readable form: no token in it
    found = [value for name, value in fields if name == CSRF_FORM_FIELD]
    return (found[0] if len(found) == 1 else None), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class GatepassMiddleware:
    """Authenticates every HTTP and WebSocket request of the wrapped app.

    ``Middleware(GatepassMiddleware)`` uses the instance :func:`gatepass_lifespan`
    put on ``app.state``; ``gatepass=`` names one directly. Paths starting with one
    of ``exclude`` are passed through untouched (anonymous): gatepass's own routes,
    when the app serves them, judge their credentials themselves.

    HTML forms posted with a session cookie may carry the CSRF token in the
    ``csrf_token`` field of an ``application/x-www-form-urlencoded`` body: the
    middleware reads it (up to 64 KiB) and hands the same body on. Multipart forms
    and JSON bodies need the ``X-CSRF-Token`` header.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        gatepass: Gatepass | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        self.app = app
        self._gatepass = gatepass
        self._exclude = tuple(exclude)
        self._trusted: Collection[str] | None = (
            trusted_origins(gatepass.settings) if gatepass is not None else None
        )

    def _instance(self, scope: Scope) -> tuple[Gatepass, Collection[str]]:
        if self._gatepass is not None and self._trusted is not None:
            return self._gatepass, self._trusted
        app = scope.get("app")
        gp = gatepass_of(app)
        trusted = getattr(app.state, "trusted_origins", None)  # type: ignore[union-attr]
        if trusted is None:
            trusted = trusted_origins(gp.settings)
        return gp, cast(Collection[str], trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._exclude and str(scope.get("path", "")).startswith(self._exclude):
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
            await self.app(scope, receive, send)
            return
        gp, trusted = self._instance(scope)
        headers = Headers(scope=scope)
        try:
            identity = await authenticate_headers(gp, headers)
            if identity is not None:
                if kind == "websocket":
                    receive = await self._check_websocket(identity, headers, trusted, receive)
                else:
                    receive = await self._check_csrf(identity, scope, headers, trusted, receive)
        except GatepassError as exc:
            if kind == "websocket":
                # Closing before accepting makes the server refuse the handshake (403).
                await send({"type": "websocket.close", "code": 1008})
                return
            await error_response(exc, gp, headers)(scope, receive, send)
            return
        if identity is None:
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
        else:
            scope["auth"], scope["user"] = credentials_for(identity), GatepassUser(identity)
        await self.app(scope, receive, send)

    @staticmethod
    async def _check_csrf(
        identity: Identity,
        scope: Scope,
        headers: Headers,
        trusted: Collection[str],
        receive: Receive,
    ) -> Receive:
        method = str(scope["method"])
        form_token: str | None = None
        if needs_csrf_token(identity, method, headers) and is_urlencoded_form(headers):
            # A foreign Origin is refused before the body is read.
            check_origin(headers.get("origin"), trusted)
            form_token, messages = await _read_form_token(receive)
            receive = _replaying(messages, receive)
        check_request_csrf(identity, method, headers, trusted, form_token)
        return receive

    @staticmethod
    async def _check_websocket(
        identity: Identity, headers: Headers, trusted: Collection[str], receive: Receive
    ) -> Receive:
        # A handshake is a GET, but a cookie-authenticated one from another site
        # would hand that site a live connection (cross-site WebSocket hijacking).
        if identity.session is not None:
            check_origin(headers.get("origin"), trusted)
        return receive


# exception handlers ---------------------------------------------------------------


async def gatepass_error_handler(request: Request, exc: Exception) -> Response:
    """problem+json (with ``WWW-Authenticate`` / ``Retry-After``) for a
    :class:`~gatepass.errors.GatepassError` raised in a route or a dependency."""
    if not isinstance(exc, GatepassError):  # registered for GatepassError only
        raise exc
    gp = getattr(request.app.state, "gatepass", None)
    return error_response(exc, gp if isinstance(gp, Gatepass) else None, request.headers)


async def requires_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException`` with gatepass's meaning of 401 and 403.

    ``@requires`` raises 403 for a missing scope: right for an authenticated
    caller, but an anonymous one is told to authenticate (401 +
    ``WWW-Authenticate``). Other statuses answer as Starlette's default does.
    """
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    headers = dict(exc.headers or {})
    status = exc.status_code
    if status in (401, 403):
        user = request.scope.get("user")
        if status == 401 or not (isinstance(user, BaseUser) and user.is_authenticated):
            headers.setdefault("WWW-Authenticate", "Bearer")
            return problem(401, None, headers=headers)
        return problem(403, None, headers=headers)
    if status in (204, 304):
        return Response(status_code=status, headers=headers)
    return PlainTextResponse(exc.detail, status_code=status, headers=headers)


def install(app: Any, *, http_exceptions: bool = True) -> None:
    """Register gatepass's exception handlers on a Starlette app (before it starts).

    ``http_exceptions=False`` leaves the app's own ``HTTPException`` handling alone
    (then ``@requires`` answers an anonymous caller with Starlette's plain 403).
    """
    app.add_exception_handler(GatepassError, gatepass_error_handler)
    if http_exceptions:
        app.add_exception_handler(HTTPException, requires_error_handler)


def user_of(conn: HTTPConnection) -> Identity | None:
    """The :class:`~gatepass.authenticator.Identity` the middleware found, if any."""
    user = conn.scope.get("user")
    return user.principal if isinstance(user, GatepassUser) else None


__all__ = [
    "AUTHENTICATED",
    "GatepassLifespan",
    "GatepassMiddleware",
    "GatepassUser",
    "authenticate_headers",
    "check_request_csrf",
    "credentials_for",
    "gatepass_error_handler",
    "gatepass_lifespan",
    "gatepass_of",
    "install",
    "requires_error_handler",
    "user_of",
]
