"""The auth server's ASGI application."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from gatepass.config import Settings, load_settings
from gatepass.core import Gatepass
from gatepass.errors import GatepassError, Overloaded, RequestError, StoreUnavailable
from gatepass.passwords import PasswordHasher
from gatepass.server import account_api, account_pages, api, factor_api, mfa_api, pages, passkey_api
from gatepass.server.me_endpoint import MeEndpoint, is_me_request
from gatepass.server.middleware import SecurityHeaders
from gatepass.server.problems import problem, problem_response
from gatepass.web import problem_for, session_cookie, trusted_origins, wildcard_bind_warning

logger = logging.getLogger("gatepass.server")


async def _gatepass_error(request: Request, exc: Exception) -> Response:
    # Registered for RequestError, Overloaded and StoreUnavailable only.
    answer = problem_for(exc) if isinstance(exc, GatepassError) else None
    if answer is None:
        raise exc
    if isinstance(exc, StoreUnavailable):
        logger.error("store unavailable: %s", exc)
    return problem_response(answer)


async def _http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    headers = dict(exc.headers or {})
    return problem(exc.status_code, None, headers=headers)


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away mid-request: nothing failed here, and nobody is left to
    # answer (uvicorn drops this response). Handled here, it never reaches the
    # catch-all below, whose exception the server would log with a traceback.
    logger.debug("client disconnected during %s %s", request.method, request.url.path)
    return problem(400, "The client disconnected.")


async def _server_error(request: Request, exc: Exception) -> Response:
    # The exception is logged by the server; its text never reaches the client.
    return problem(500)


class GatepassApp(Starlette):
    """The auth server: Starlette, with ``GET /auth/me`` answered ahead of the router
    (see :mod:`gatepass.server.me_endpoint`) once a :class:`Gatepass` is open."""

    me_endpoint: MeEndpoint | None = None

    def serve(self, gatepass: Gatepass | None) -> None:
        """Serve ``gatepass`` (``None``: nothing until the next one)."""
        self.state.gatepass = gatepass
        self.me_endpoint = (
            None
            if gatepass is None
            else MeEndpoint(gatepass, session_cookie(gatepass.settings).name)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.me_endpoint
        if endpoint is not None and is_me_request(scope):
            await endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    gatepass: Gatepass | None = None,
    clock: Callable[[], float] = time.time,
    hasher: PasswordHasher | None = None,
) -> GatepassApp:
    """Build the auth server.

    Pass ``gatepass`` to serve an already opened instance (its owner closes it);
    otherwise one is opened from ``settings`` on start-up and closed on shutdown.
    """
    if settings is not None:
        config = settings
    elif gatepass is not None:
        config = gatepass.settings
    else:
        raise TypeError("create_app needs settings or a Gatepass instance")

    @asynccontextmanager
    async def lifespan(app: GatepassApp) -> AsyncIterator[None]:
        warning = wildcard_bind_warning(config)
        if warning is not None:
            logger.warning(warning)
        if gatepass is not None or settings is None:
            app.serve(gatepass)
            yield
            return
        opened = await Gatepass.open(settings, clock=clock, hasher=hasher)
        app.serve(opened)
        pruning = asyncio.ensure_future(opened.prune_forever())
        try:
            yield
        finally:
            pruning.cancel()
            # Closed below: the fast endpoint must not serve a closed instance.
            app.me_endpoint = None
            await opened.close()

    app = GatepassApp(
        routes=[
            *api.routes,
            *account_api.routes,
            *factor_api.routes,
            *mfa_api.routes,
            *passkey_api.routes,
            Route("/", pages.root, methods=["GET"]),
            Route("/login", pages.login_page, methods=["GET"]),
            Route("/account", pages.account_page, methods=["GET"]),
            *account_pages.routes,
            Mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            RequestError: _gatepass_error,
            HTTPException: _http_exception,
            StoreUnavailable: _gatepass_error,
            Overloaded: _gatepass_error,
            ClientDisconnect: _client_disconnect,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    # Unknown paths, trailing slashes included, are 404: a slash redirect would build
    # its Location from the Host header and the internal scheme.
    app.router.redirect_slashes = False
    # Once per app, from configuration: never from a request's Host header.
    app.state.trusted_origins = trusted_origins(config)
    app.state.templates = pages.make_environment()
    if gatepass is not None:
        app.serve(gatepass)
    return app


def create_app_from_env() -> GatepassApp:
    """Factory for ``uvicorn --factory`` (multi-worker): settings from the environment."""
    return create_app(load_settings())
