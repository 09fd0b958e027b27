"""What one Django process holds for gatepass, and the rules it applies to a request.

Embedded mode opens a :class:`~gatepass.core.Gatepass` on the process's one
:class:`~gatepass.integrations._sync.LoopThread`, lazily on the first request (so
after gunicorn's fork, in each worker) and again after a failed attempt: a store
that is down at start-up makes requests 503 until it is back, it does not leave
the process without gatepass. Resource-server mode holds a sync
:class:`gatepass.verifier.Verifier`, which needs no loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Collection, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]

from gatepass.csrf import CSRF_FORM_FIELD, SAFE_METHODS
from gatepass.errors import GatepassError, StoreUnavailable
from gatepass.integrations._bridge import BridgedRequest, BridgedResponse, call_asgi
from gatepass.integrations._principal import Principal as Principal
from gatepass.integrations._sync import LoopThread
from gatepass.integrations.django.conf import EmbeddedOptions, Options, ResourceServerOptions
from gatepass.web import (
    PROBLEM_MEDIA_TYPE,
    enforce_csrf,
    problem_for,
    request_credentials,
    session_cookie,
    trusted_origins,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from gatepass.core import Gatepass

logger = logging.getLogger("gatepass.django")
T = TypeVar("T")
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


class Runtime(Protocol):
    mode: str

    def authenticate(
        self, authorization: str | None, cookie_header: str | None
    ) -> tuple[Principal, str | None] | None:
        """``(principal, session CSRF token)``; ``None`` when no credential was sent;
        a :class:`GatepassError` for a bad one. The CSRF token is set only when
        gatepass's session cookie was the credential."""
        ...

    def csrf_origins(self) -> Collection[str]: ...

    def bridge(self, request: BridgedRequest) -> BridgedResponse | None: ...

    def close(self) -> None: ...


class EmbeddedRuntime:
    """A :class:`Gatepass` opened on this process's loop thread."""

    mode = "embedded"

    def __init__(self, options: EmbeddedOptions) -> None:
        self.options = options
        self.settings = options.settings
        self.session_cookie_name = session_cookie(options.settings).name
        self._origins = trusted_origins(options.settings)
        self._loop = LoopThread("gatepass-django")
        self._loop.on_start(self._fresh_loop)
        self._opened: tuple[Gatepass, ASGIApp] | None = None
        self._opening: asyncio.Lock | None = None
        self._pruning: asyncio.Task[None] | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddedRuntime({self._loop!r})"

    async def _fresh_loop(self) -> None:
        # A new loop: the first in this process, or the first after a fork, whose
        # copy of the parent's Gatepass belongs to a loop that no longer runs here.
        self._opened = None
        self._pruning = None
        self._opening = asyncio.Lock()

    async def _open(self) -> tuple[Gatepass, ASGIApp]:
        opened = self._opened
        if opened is not None:
            return opened
        if self._opening is None:  # only if a start hook did not run: be safe anyway
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._opened is None:
                from gatepass.core import Gatepass
                from gatepass.server.app import create_app

                clock = self.options.clock or time.time
                make_hasher = self.options.hasher
                hasher = make_hasher() if make_hasher is not None else None
                try:
                    gatepass = await Gatepass.open(self.settings, clock=clock, hasher=hasher)
                except GatepassError:
                    raise
                except Exception as exc:
                    # A data folder that cannot be created, a file that cannot be
                    # opened: an outage to this request (503), retried by the next.
                    logger.exception("opening gatepass's stores failed")
                    raise StoreUnavailable("gatepass's stores could not be opened") from exc
                if self.options.prune_interval is not None:
                    self._pruning = asyncio.ensure_future(
                        gatepass.prune_forever(self.options.prune_interval)
                    )
                self._opened = (gatepass, create_app(gatepass=gatepass))
            return self._opened

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop thread; a store that does not answer in
        time counts as unavailable (fail closed)."""
        try:
            return self._loop.run(coroutine)
        except TimeoutError:
            raise StoreUnavailable("gatepass did not answer in time") from None

    def gatepass(self) -> Gatepass:
        """The opened instance (opening it if need be), for the host's own calls."""
        return self.run(self._open())[0]

    async def _authenticate(
        self, authorization: str | None, cookie: str | None
    ) -> tuple[Principal, str | None]:
        gatepass, _ = await self._open()
        identity = await gatepass.authenticator.authenticate(authorization, cookie)
        return identity, identity.session.csrf_token if identity.session else None

    def authenticate(
        self, authorization: str | None, cookie_header: str | None
    ) -> tuple[Principal, str | None] | None:
        authorization, cookie = request_credentials(
            authorization, cookie_header, self.session_cookie_name
        )
        if authorization is None and cookie is None:
            return None  # anonymous: no store round trip
        opened = self._opened
        if opened is not None and self._loop.running_here():
            # A cached Bearer token is judged on this thread, sparing the hop to the
            # loop; anything that needs a store read goes there.
            identity = opened[0].authenticator.authenticate_now(authorization)
            if identity is not None:
                return identity, None
        return self.run(self._authenticate(authorization, cookie))

    def csrf_origins(self) -> Collection[str]:
        return self._origins

    async def _call(self, request: BridgedRequest) -> BridgedResponse:
        _, app = await self._open()
        return await call_asgi(app, request)

    def bridge(self, request: BridgedRequest) -> BridgedResponse | None:
        return self.run(self._call(request))

    async def _close(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
        if self._opened is not None:
            await self._opened[0].close()
        self._opened = None

    def close(self) -> None:
        """Close the store and stop the loop thread (idempotent; a no-op in a forked
        child, whose loop is its own).

        Nothing calls this at interpreter exit: by then the standard library refuses
        new work to the thread pools the stores close through, and every write has
        committed anyway; the daemon loop thread simply ends with the process.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._loop.stop(self._close)


class ResourceServerRuntime:
    """A sync verifier of a running ``gatepass serve``'s tokens: Bearer only."""

    mode = "resource_server"

    def __init__(self, options: ResourceServerOptions) -> None:
        self.options = options
        self.verifier: Any = (
            options.verifier if options.verifier is not None else _verifier(options)
        )

    def __repr__(self) -> str:
        return f"ResourceServerRuntime({self.options.issuer!r})"

    def authenticate(
        self, authorization: str | None, cookie_header: str | None
    ) -> tuple[Principal, str | None] | None:
        # A cookie is no credential here: the auth server's session cookie belongs
        # to the auth server's origin, and a resource server cannot check it.
        if authorization is None:
            return None
        return self.verifier.verify_authorization(authorization), None

    def csrf_origins(self) -> Collection[str]:
        return frozenset()

    def bridge(self, request: BridgedRequest) -> BridgedResponse | None:
        return None  # gatepass's routes live on the auth server

    def close(self) -> None:
        if self.options.verifier is None:  # the project closes the one it passed
            self.verifier.close()


def _verifier(options: ResourceServerOptions) -> Any:
    import gatepass.verifier

    if options.issuer is None:
        raise ImproperlyConfigured("GATEPASS['ISSUER'] is required in resource-server mode")
    kwargs: dict[str, Any] = dict(options.options)
    if options.feed and options.feed_token is not None:
        kwargs["revocations"] = gatepass.verifier.RevocationFeed(
            options.feed_url or options.issuer, token=options.feed_token
        )
    return gatepass.verifier.Verifier(options.issuer, audience=options.audience, **kwargs)


def make_runtime(options: Options) -> Runtime:
    if isinstance(options, EmbeddedOptions):
        return EmbeddedRuntime(options)
    return ResourceServerRuntime(options)


# the request rules ----------------------------------------------------------------


def _presented_csrf_token(request: HttpRequest) -> str | None:
    token = request.META.get("HTTP_X_CSRF_TOKEN")
    if token is None and request.content_type in _FORM_TYPES:
        value = request.POST.get(CSRF_FORM_FIELD)
        token = value if isinstance(value, str) else None
    return token if isinstance(token, str) else None


def authenticate_request(runtime: Runtime, request: HttpRequest) -> Principal | None:
    """The caller of a host view, or ``None`` when no credential was sent.

    Bearer first (judged alone, never a fallback to the cookie), else gatepass's
    session cookie; a cookie-authenticated unsafe request must also pass gatepass's
    CSRF rule (``X-CSRF-Token`` or the ``csrf_token`` field, a trusted ``Origin``).
    Raises :class:`GatepassError` (401, 403, 503) otherwise.
    """
    found = runtime.authenticate(
        request.META.get("HTTP_AUTHORIZATION"), request.META.get("HTTP_COOKIE")
    )
    if found is None:
        return None
    principal, session_csrf_token = found
    if request.method not in SAFE_METHODS and (
        session_csrf_token is not None or runtime.mode == "embedded"
    ):
        # Embedded, Origin is checked on every unsafe request (as the server and the
        # other adapters do), the token on a cookie session's. A resource server
        # takes Bearer tokens only, no ambient credential: its origins are CORS's.
        enforce_csrf(
            request.method,
            request.META.get("HTTP_ORIGIN"),
            runtime.csrf_origins(),
            session_csrf_token=session_csrf_token,
            presented_token=_presented_csrf_token(request) if session_csrf_token else None,
        )
    return principal


def problem_response(exc: GatepassError) -> HttpResponse:
    """The RFC 9457 answer for ``exc`` (fixed text, never the exception's); ``exc``
    itself is raised again when it is a bug rather than the request's fault."""
    problem = problem_for(exc)
    if problem is None:
        raise exc
    response = HttpResponse(
        json.dumps(dict(problem.body)),
        status=problem.status,
        content_type=PROBLEM_MEDIA_TYPE,
    )
    for name, value in problem.headers.items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response
