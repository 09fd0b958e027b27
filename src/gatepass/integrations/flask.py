"""gatepass for Flask: an extension, a blueprint of gatepass's routes, the current
identity and decorators that require it.

Two modes, picked by what the extension is given:

* **embedded** (``settings=``, or ``GATEPASS_*`` keys in ``app.config``): the app
  holds a :class:`~gatepass.core.Gatepass`. A request is judged on its Bearer token
  when it has an ``Authorization`` header, else on the session cookie;
  :func:`gatepass_blueprint` serves ``/auth/*``, the JWKS and the sign-in pages.
* **resource server** (``verifier=``): the app trusts tokens of a running
  ``gatepass serve`` through a :class:`gatepass.verifier.Verifier`. Bearer only: a
  cookie is no credential here, and there are no routes.

Flask views are sync and gatepass's stores are async, with pools bound to the loop
that opened them. Every coroutine therefore runs on one
:class:`~gatepass.integrations._sync.LoopThread` per process, started on first use,
so also after a pre-fork server (gunicorn) forked its workers; never a loop per
request.

Errors are answered as gatepass answers them (:func:`gatepass.web.problem_for`):
401 problem+json with ``WWW-Authenticate``, 403 for a missing role or a failed
CSRF check, 503 with ``Retry-After`` when a store (or the verifier's key set or
revocation feed) cannot be trusted. Never Flask's HTML error pages.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from flask import Blueprint, Flask, current_app, g, request
from flask.blueprints import BlueprintSetupState
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException
from werkzeug.local import LocalProxy

from gatepass.config import ProxyNet, Settings, load_settings
from gatepass.csrf import CSRF_FORM_FIELD, CSRF_HEADER, SAFE_METHODS
from gatepass.errors import (
    AuthenticationFailed,
    GatepassError,
    PayloadTooLarge,
    PermissionDenied,
    StoreUnavailable,
)
from gatepass.integrations._bridge import MAX_BRIDGED_BODY, BridgedRequest, call_asgi
from gatepass.integrations._principal import Principal as Principal
from gatepass.integrations._principal import check_principal
from gatepass.integrations._sync import LoopThread
from gatepass.web import (
    PROBLEM_MEDIA_TYPE,
    client_ip,
    enforce_csrf,
    join_cookie_headers,
    problem_body,
    problem_for,
    request_credentials,
    session_cookie,
    trusted_origins,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from gatepass.authenticator import Identity
    from gatepass.clock import Clock
    from gatepass.core import Gatepass
    from gatepass.passwords import PasswordHasher

__all__ = [
    "EXTENSION_KEY",
    "FlaskGatepass",
    "Principal",
    "TokenVerifier",
    "client_address",
    "current_identity",
    "fresh_login_required",
    "gatepass_blueprint",
    "get_identity",
    "login_required",
    "roles_required",
    "second_factor_required",
    "settings_from_config",
]

logger = logging.getLogger("gatepass.flask")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Where the extension keeps its per-app state: ``app.extensions[EXTENSION_KEY]``.
EXTENSION_KEY = "gatepass"
#: ``app.config`` key (Flask only, not an environment setting) for the embedded
#: default's data folder; the other ``GATEPASS_*`` keys are gatepass's settings.
DATA_DIR_KEY = "GATEPASS_DATA_DIR"
_G_PRINCIPAL = "_gatepass_principal"
_UNJUDGED = object()
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class TokenVerifier(Protocol):
    """What resource-server mode needs of a :class:`gatepass.verifier.Verifier`."""

    def verify_authorization(self, authorization: str) -> Principal:
        """The principal behind an ``Authorization`` header value, or raise."""
        ...


# configuration ----------------------------------------------------------------------


def _config_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    return str(value)


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """gatepass's settings from the ``GATEPASS_*`` keys of a Flask ``app.config``.

    Each key means what the environment variable of that name means
    (docs/configuration.md); values may be strings or Python values (``True``,
    ``900``, a list of origins). ``GATEPASS_DATA_DIR`` names the embedded default's
    data folder. An unknown or invalid key raises
    :class:`~gatepass.errors.ConfigError` naming it.
    """
    env = {
        key: _config_text(value)
        for key, value in config.items()
        if key.startswith("GATEPASS_") and key != DATA_DIR_KEY and value is not None
    }
    data_dir = config.get(DATA_DIR_KEY)
    if data_dir is None:
        return load_settings(env)
    return load_settings(env, data_dir=Path(data_dir))


# error answers ----------------------------------------------------------------------


def _problem(status: int, headers: Mapping[str, str], body: Mapping[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=dict(headers),
        content_type=PROBLEM_MEDIA_TYPE,
    )


def _handle_gatepass_error(exc: GatepassError) -> Response:
    answer = problem_for(exc)
    if answer is None:
        # A bug, not the client's doing: logged with its traceback, never answered.
        logger.error("unexpected gatepass error", exc_info=exc)
        return _problem(500, {}, problem_body(500))
    if isinstance(exc, StoreUnavailable):
        logger.error("store unavailable: %s", exc)
    return _problem(answer.status, answer.headers, answer.body)


# the two modes ----------------------------------------------------------------------


def _presented_csrf_token() -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token is not None or request.mimetype not in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        return token
    try:
        value = request.form.get(CSRF_FORM_FIELD)
    except HTTPException:  # a form over MAX_CONTENT_LENGTH carries no usable token
        return None
    return value if isinstance(value, str) else None


@dataclass(slots=True)
class _Opened:
    gatepass: Gatepass
    asgi: ASGIApp
    pruning: asyncio.Task[None]


@dataclass(slots=True)
class _Embedded:
    """An app holding a :class:`~gatepass.core.Gatepass`, opened on this process's
    loop the first time a request needs it (again in each forked worker)."""

    settings: Settings
    clock: Clock
    hasher: PasswordHasher | None
    loop: LoopThread = field(default_factory=LoopThread)
    opened: _Opened | None = None
    #: Instances a fork copied from the parent: never used nor closed here (their
    #: connections belong to the parent), only kept from the garbage collector,
    #: whose finalisers would try to close them on a loop that no longer runs.
    inherited: list[_Opened] = field(default_factory=list)
    session_cookie_name: str = ""
    trusted: frozenset[str] = frozenset()
    created_in: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.session_cookie_name = session_cookie(self.settings).name
        self.trusted = trusted_origins(self.settings)
        self.loop.on_start(self._open)

    @property
    def proxies(self) -> Sequence[ProxyNet]:
        return self.settings.trusted_proxies

    async def _open(self) -> None:
        from gatepass.core import Gatepass
        from gatepass.server.app import create_app

        if self.opened is not None:
            self.inherited.append(self.opened)
            self.opened = None
        if self.hasher is not None and os.getpid() != self.created_in:
            # A hasher handed in before a fork holds the parent's thread pool, whose
            # threads did not come along: drop it, so hashing starts a pool here.
            self.hasher.close()
        try:
            gp = await Gatepass.open(self.settings, clock=self.clock, hasher=self.hasher)
        except GatepassError:
            raise
        except Exception as exc:
            # A database file that cannot be created or opened: an outage to this
            # request (503), retried by the next one, logged for the operator.
            logger.exception("opening gatepass's stores failed")
            raise StoreUnavailable("gatepass's stores could not be opened") from exc
        pruning = asyncio.ensure_future(gp.prune_forever())
        self.opened = _Opened(gp, create_app(gatepass=gp), pruning)

    async def _close(self) -> None:
        opened, self.opened = self.opened, None
        if opened is not None:
            opened.pruning.cancel()
            await opened.gatepass.close()

    def call(self, func: Callable[[Gatepass], Awaitable[T]]) -> T:
        """``await func(gatepass)`` on the loop; a loop that does not answer in time
        counts as a store that does not (503)."""

        return self._on_loop(lambda opened: func(opened.gatepass))

    def _on_loop(self, func: Callable[[_Opened], Awaitable[T]]) -> T:
        async def run() -> T:
            # Opened by the loop's start hook before anything else runs there; gone
            # only when close() won a race with this request.
            opened = self.opened
            if opened is None:
                raise StoreUnavailable("gatepass is closed")
            return await func(opened)

        try:
            return self.loop.run(run())
        except TimeoutError:
            raise StoreUnavailable("gatepass did not answer in time") from None

    def authenticate(self) -> Identity | None:
        authorization, cookie = request_credentials(
            request.headers.get("Authorization"),
            join_cookie_headers(request.headers.getlist("Cookie")),
            self.session_cookie_name,
        )
        if authorization is None and cookie is None:
            return None  # nothing sent: anonymous, and no trip to the loop
        identity = None
        opened = self.opened
        if opened is not None and self.loop.running_here():
            # A cached Bearer token is judged on this thread, sparing the hop to the
            # loop; anything that needs a store read goes there.
            identity = opened.gatepass.authenticator.authenticate_now(authorization)
        if identity is None:
            identity = self.call(lambda gp: gp.authenticator.authenticate(authorization, cookie))
        session = identity.session
        unsafe = request.method.upper() not in SAFE_METHODS
        enforce_csrf(
            request.method,
            request.headers.get("Origin"),
            self.trusted,
            session_csrf_token=session.csrf_token if session is not None else None,
            presented_token=_presented_csrf_token() if unsafe and session is not None else None,
        )
        return identity

    def forward(self) -> Response:
        """Serve this request with the auth server's own ASGI app."""
        try:
            body = request.stream.read(MAX_BRIDGED_BODY)
        except HTTPException:  # over the host app's MAX_CONTENT_LENGTH
            raise PayloadTooLarge() from None
        environ = request.environ
        peer = request.remote_addr
        bridged = BridgedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=[
                (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
                for name, value in request.headers.items()
            ],
            body=body,
            client=(peer, int(environ.get("REMOTE_PORT") or 0)) if peer else None,
            server=(str(environ.get("SERVER_NAME", "")), int(environ.get("SERVER_PORT") or 0)),
            scheme=request.scheme,
        )

        answer = self._on_loop(lambda opened: call_asgi(opened.asgi, bridged))
        return Response(answer.body, status=answer.status, headers=answer.headers)

    def close(self) -> None:
        self.loop.stop(self._close)


@dataclass(slots=True)
class _ResourceServer:
    """An app that trusts the tokens of a running ``gatepass serve``."""

    verifier: TokenVerifier
    proxies: Sequence[ProxyNet] = ()

    def authenticate(self) -> Principal | None:
        # A cookie is no credential here: only what the Authorization header says.
        environ = request._get_current_object().environ  # type: ignore[attr-defined]
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is None:
            return None
        return self.verifier.verify_authorization(authorization)


_State = _Embedded | _ResourceServer


# the extension ----------------------------------------------------------------------


class FlaskGatepass:
    """The Flask extension. Create it without an app and bind it in your factory::

        gatepass = FlaskGatepass()            # GATEPASS_* keys of app.config
        # or FlaskGatepass(settings=load_settings())     embedded
        # or FlaskGatepass(verifier=Verifier(issuer_url))  resource server

        def create_app():
            app = Flask(__name__)
            gatepass.init_app(app)
            app.register_blueprint(gatepass_blueprint())  # embedded only
            return app

    ``clock`` and ``hasher`` are handed to :meth:`gatepass.core.Gatepass.open`
    (tests inject a fake clock and cheap argon2 parameters).
    ``trusted_proxies`` (resource server) names the proxies whose
    ``X-Forwarded-For`` :func:`client_address` believes; embedded mode takes
    ``GATEPASS_TRUSTED_PROXIES``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        verifier: TokenVerifier | None = None,
        clock: Clock = time.time,
        hasher: PasswordHasher | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        if settings is not None and verifier is not None:
            raise TypeError("FlaskGatepass takes settings (embedded) or a verifier, not both")
        self._settings = settings
        self._verifier = verifier
        self._clock = clock
        self._hasher = hasher
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        mode = "resource server" if self._verifier is not None else "embedded"
        return f"FlaskGatepass({mode})"

    def init_app(self, app: Flask) -> None:
        """Bind to ``app``: its state goes to ``app.extensions["gatepass"]`` and
        gatepass's errors are answered as problem+json from every view.

        Without settings or a verifier, settings come from the ``GATEPASS_*`` keys
        of ``app.config`` (:func:`settings_from_config`). Nothing is opened here:
        the store opens on the first request that needs it, in the process that
        serves it (so after a pre-fork server forked).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("gatepass is already initialised on this app")
        state: _State
        if self._verifier is not None:
            state = _ResourceServer(self._verifier, self._proxies)
        else:
            settings = self._settings or settings_from_config(app.config)
            state = _Embedded(settings, self._clock, self._hasher)
        app.extensions[EXTENSION_KEY] = state
        app.register_error_handler(GatepassError, _handle_gatepass_error)

    def call(self, func: Callable[[Gatepass], Awaitable[T]], app: Flask | None = None) -> T:
        """Run ``await func(gatepass)`` on this process's gatepass loop (embedded mode)
        and return its result: for the host's own use of the core (creating a user
        from a CLI command, revoking sessions from an admin view)."""
        return _embedded(app or current_app).call(func)

    def close(self, app: Flask | None = None) -> None:
        """Close the store and stop the loop thread of this process (embedded mode).
        A later request opens them again."""
        state = _state(app or current_app)
        if isinstance(state, _Embedded):
            state.close()


def _state(app: Flask) -> _State:
    try:
        return cast(_State, app.extensions[EXTENSION_KEY])
    except KeyError:
        raise RuntimeError("FlaskGatepass.init_app(app) was not called") from None


def _embedded(app: Flask) -> _Embedded:
    state = _state(app)
    if not isinstance(state, _Embedded):
        raise RuntimeError("this needs gatepass in embedded mode (settings, not a verifier)")
    return state


# the current identity -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Refused:
    error: GatepassError


def get_identity() -> Principal | None:
    """Who is calling, judged once per request (the result is kept on ``flask.g``).

    ``None`` only when the request carries no credential at all; a bad one raises
    (401), as does a store that cannot be reached (503). In embedded mode a
    cookie-authenticated unsafe request also passes the CSRF check here (403).
    """
    # Every request asks at least twice (the decorator, then the view): the proxies
    # are resolved once per call, not once per attribute.
    scope = g._get_current_object()
    cached = getattr(scope, _G_PRINCIPAL, _UNJUDGED)
    if cached is _UNJUDGED:
        try:
            principal = _state(current_app._get_current_object()).authenticate()  # type: ignore[attr-defined]
        except GatepassError as exc:
            setattr(scope, _G_PRINCIPAL, _Refused(exc))
            raise
        setattr(scope, _G_PRINCIPAL, principal)
        return principal
    if isinstance(cached, _Refused):
        raise cached.error
    return cast(Principal | None, cached)


#: The principal of the current request, or ``None`` without a credential (a proxy:
#: test it with ``if current_identity:``; ``is None`` compares the proxy itself).
current_identity: LocalProxy[Principal | None] = LocalProxy(get_identity)


def client_address() -> str | None:
    """The current request's client address: the peer, or behind a trusted proxy
    the address it forwarded (:func:`gatepass.web.client_ip`)."""
    proxies = _state(current_app).proxies
    return client_ip(request.remote_addr, request.headers.getlist("X-Forwarded-For"), proxies)


@dataclass(frozen=True, slots=True)
class _Requirement:
    """What a guarded view asks of its caller."""

    roles: Collection[str] = ()
    max_age: float | None = None
    second_factor: bool = False


def _require(need: _Requirement) -> Principal:
    principal = get_identity()
    if principal is None:
        raise AuthenticationFailed()
    if need.roles and not set(need.roles) <= set(principal.roles):
        raise PermissionDenied("A required role is missing.")
    if need.max_age is not None or need.second_factor:
        state = _state(current_app)
        # The embedded instance's clock (tests inject one); a resource server's own.
        now = state.clock() if isinstance(state, _Embedded) else time.time()
        check_principal(principal, now, max_age=need.max_age, second_factor=need.second_factor)
    return principal


def _guard(view: F, need: _Requirement) -> F:
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            _require(need)
            return await view(*args, **kwargs)

        return cast(F, guarded_async)

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _require(need)
        return view(*args, **kwargs)

    return cast(F, guarded)


def login_required(view: F) -> F:
    """The view runs only for an authenticated caller; 401 otherwise."""
    return _guard(view, _Requirement())


def roles_required(*roles: str) -> Callable[[F], F]:
    """The view runs only for a caller holding every one of ``roles``: 401 without a
    valid credential, 403 with one that lacks a role."""
    if not roles:
        raise TypeError("roles_required needs at least one role")

    def decorate(view: F) -> F:
        return _guard(view, _Requirement(roles=frozenset(roles)))

    return decorate


def fresh_login_required(max_age: float) -> Callable[[F], F]:
    """The view runs only for a caller who signed in (or reauthenticated) within
    ``max_age`` seconds: 401 without a credential, 403 ``reauthentication_required``
    with an older sign-in."""

    def decorate(view: F) -> F:
        return _guard(view, _Requirement(max_age=max_age))

    return decorate


def second_factor_required(view: F) -> F:
    """The view runs only for a caller who signed in with two factors: 401 without a
    credential, 403 ``second_factor_required`` otherwise."""
    return _guard(view, _Requirement(second_factor=True))


# the routes -------------------------------------------------------------------------


def _forward(**_: str) -> Response:
    return _embedded(current_app).forward()


def _check_embedded(setup: BlueprintSetupState) -> None:
    state = setup.app.extensions.get(EXTENSION_KEY)
    if isinstance(state, _ResourceServer):
        raise TypeError("a resource server serves no gatepass routes: the issuer does")


def gatepass_blueprint(name: str = "gatepass") -> Blueprint:
    """A blueprint serving gatepass's routes (``/auth/*``, ``/.well-known/jwks.json``,
    the pages ``/login``, ``/account``, ``/register``, ``/forgot-password``,
    ``/reset-password``, ``/verify-email`` and their static files) through the auth server's own
    app, so they keep its HTTP contract exactly. Register it at the app's root, on
    an app whose extension is in embedded mode.

    Only the files gatepass ships are served under ``/static/``: the host app's own
    static folder keeps the rest of that path.
    """
    from gatepass.server.pages import STATIC_DIR

    blueprint = Blueprint(name, __name__)
    blueprint.record_once(_check_embedded)
    rules = {
        "/auth/<path:rest>": "auth",
        "/.well-known/jwks.json": "jwks",
        "/login": "login_page",
        "/account": "account_page",
        "/register": "register_page",
        "/forgot-password": "forgot_password_page",
        "/reset-password": "reset_password_page",
        "/verify-email": "verify_email_page",
    }
    for path in sorted(Path(STATIC_DIR).iterdir()):
        if path.is_file():
            rules[f"/static/{path.name}"] = "static_" + path.name.replace(".", "_")
    for rule, endpoint in rules.items():
        blueprint.add_url_rule(
            rule,
            endpoint=endpoint,
            view_func=_forward,
            methods=_ALL_METHODS,
            # OPTIONS is the auth server's to answer, as every other method.
            provide_automatic_options=False,
        )
    return blueprint
