"""gatepass inside a FastAPI application: embedded mode.

::

    app = FastAPI(lifespan=gatepass_lifespan(settings))
    install(app)                                   # problem+json for gatepass's errors
    app.include_router(auth_router(), prefix="/api")   # /api/auth/login, /api/auth/me ...

    @app.get("/notes")
    async def notes(identity: Identity = Depends(current_identity)) -> list[str]: ...

* :func:`auth_router` is an ``APIRouter`` of gatepass's routes (DESIGN §3), served by
  the very endpoints ``gatepass serve`` runs, under any prefix;
* :func:`current_identity` (401 without a valid credential), :func:`optional_identity`
  (``None`` only when no credential was sent at all; a bad one is still 401) and
  :func:`require_roles` (403 when a role is missing) are dependencies declared
  through FastAPI's security classes, so the OpenAPI document lists the Bearer token
  and the session cookie as alternative security schemes;
* a cookie-authenticated POST/PUT/PATCH/DELETE needs its CSRF token
  (``X-CSRF-Token``, or the ``csrf_token`` field of a form) and a trusted ``Origin``:
  403 otherwise. Bearer requests need no token;
* :func:`gatepass_lifespan` (from :mod:`gatepass.integrations.asgi`) is the app's
  lifespan or nests in its own.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependencies'
# annotations at run time, and they name local security objects.
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer
from starlette.routing import Route

from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.csrf import CSRF_FORM_FIELD
from gatepass.errors import AuthenticationFailed, GatepassError, PermissionDenied
from gatepass.integrations._principal import check_principal
from gatepass.integrations.asgi import (
    GatepassLifespan,
    GatepassUser,
    authenticate_headers,
    check_request_csrf,
    credentials_for,
    gatepass_error_handler,
    gatepass_lifespan,
    gatepass_of,
    needs_csrf_token,
    user_of,
)
from gatepass.server import account_api, api, factor_api, mfa_api, passkey_api
from gatepass.web import SESSION_COOKIE_SECURE, session_cookie, trusted_origins

#: Names of the two security schemes in the OpenAPI document.
BEARER_SCHEME = "gatepassBearer"
COOKIE_SCHEME = "gatepassSession"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def auth_router() -> APIRouter:
    """gatepass's JSON routes (``/auth/*``, ``/.well-known/jwks.json``, ``/healthz``,
    ``/metrics``) as an ``APIRouter``: ``app.include_router(auth_router(), prefix=...)``.

    The routes are the auth server's own endpoints (plain Starlette routes, which
    FastAPI copies under the prefix), so every status code, body, cookie and CSRF
    rule of the contract holds. They read the instance :func:`gatepass_lifespan`
    puts on ``app.state``, and need :func:`install`'s exception handlers. The HTML
    pages (``/login``, ``/account``) are not included: they link to fixed paths.
    """
    router = APIRouter()
    routes = (
        *api.routes,
        *account_api.routes,
        *factor_api.routes,
        *passkey_api.routes,
        *mfa_api.routes,
    )
    router.routes.extend(route for route in routes if isinstance(route, Route))
    return router


def install(app: Any) -> None:
    """Register the handler that answers gatepass's errors (raised by the routes and
    the dependencies) as problem+json; FastAPI's own ``HTTPException`` handling is
    left alone."""
    app.add_exception_handler(GatepassError, gatepass_error_handler)


def _trusted(request: Request) -> Collection[str]:
    trusted = getattr(request.app.state, "trusted_origins", None)
    if trusted is None:
        trusted = trusted_origins(gatepass_of(request.app).settings)
    return cast(Collection[str], trusted)


async def _form_token(request: Request) -> str | None:
    # FastAPI keeps the parsed form on the request, so the endpoint's Form(...)
    # parameters still see the same body.
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in _FORM_TYPES:
        return None
    form = await request.form()
    values = form.getlist(CSRF_FORM_FIELD)
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


async def _judge(request: Request) -> Identity | None:
    """Authenticate the request by the hybrid rules and apply the CSRF rules; the
    result is kept on the scope (``request.user``), so a second dependency on the
    same request does not judge it again."""
    found = user_of(request)
    if found is not None:  # judged already (GatepassMiddleware or another dependency)
        return found
    identity = await authenticate_headers(gatepass_of(request.app), request.headers)
    if identity is not None:
        form_token = None
        if needs_csrf_token(identity, request.method, request.headers):
            form_token = await _form_token(request)
        check_request_csrf(identity, request.method, request.headers, _trusted(request), form_token)
        request.scope["auth"] = credentials_for(identity)
        request.scope["user"] = GatepassUser(identity)
    return identity


def _identity_scheme(cookie: APIKeyCookie, *, required: bool) -> Callable[..., Any]:
    """A dependency that is itself the Bearer security scheme, with the cookie scheme
    as its one sub-dependency: OpenAPI lists both as alternatives, and a request pays
    for two dependencies, not four. The credential is read from the raw headers
    (Bearer first, a duplicated cookie refused), never from what FastAPI parsed."""

    class IdentityScheme(HTTPBearer):
        async def __call__(  # type: ignore[override]
            self,
            request: Request,
            _cookie: Annotated[str | None, Security(cookie)],
        ) -> Identity | None:
            identity = await _judge(request)
            if identity is None and required:
                raise AuthenticationFailed()
            return identity

    return IdentityScheme(
        auto_error=False,
        scheme_name=BEARER_SCHEME,
        bearerFormat="JWT",
        description="An access token from POST /auth/login with client mobile or api.",
    )


class GatepassSecurity:
    """The dependencies, declared for one session cookie name (the secure
    ``__Host-gatepass_session`` by default; :meth:`for_settings` picks the name the
    settings give, ``gatepass_session`` in dev mode). The module-level
    :data:`current_identity`, :data:`optional_identity` and :func:`require_roles`
    belong to the default instance.
    """

    def __init__(self, cookie_name: str = SESSION_COOKIE_SECURE) -> None:
        cookie = APIKeyCookie(
            name=cookie_name,
            auto_error=False,
            scheme_name=COOKIE_SCHEME,
            description=(
                "The session cookie from POST /auth/login (client web). Unsafe methods "
                "also need the session's CSRF token in the X-CSRF-Token header."
            ),
        )
        self._optional = _identity_scheme(cookie, required=False)
        self._current = _identity_scheme(cookie, required=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> "GatepassSecurity":
        return cls(session_cookie(settings).name)

    @property
    def optional_identity(self) -> Callable[..., Awaitable[Identity | None]]:
        """The caller, or ``None`` when the request carried no credential at all."""
        return cast(Callable[..., Awaitable[Identity | None]], self._optional)

    @property
    def current_identity(self) -> Callable[..., Awaitable[Identity]]:
        """The caller; 401 (problem+json, ``WWW-Authenticate``) without one."""
        return cast(Callable[..., Awaitable[Identity]], self._current)

    def require_roles(self, *roles: str) -> Callable[..., Awaitable[Identity]]:
        """The caller, who must hold every role named (403 otherwise, 401 anonymous)."""
        if not roles:
            raise TypeError("require_roles needs at least one role")
        needed = frozenset(roles)
        current = self.current_identity

        async def with_roles(identity: Annotated[Identity, Depends(current)]) -> Identity:
            if not needed.issubset(identity.roles):
                raise PermissionDenied("A required role is missing.")
            return identity

        return with_roles

    def require_sign_in(
        self, *, max_age: int | None = None, second_factor: bool = False
    ) -> Callable[..., Awaitable[Identity]]:
        """The caller, whose sign-in is at most ``max_age`` seconds old (else 403
        ``reauthentication_required``) and, with ``second_factor``, used two factors
        (else 403 ``second_factor_required``); 401 anonymous."""
        if max_age is None and not second_factor:
            raise TypeError("require_sign_in needs max_age or second_factor")
        current = self.current_identity

        async def checked(
            request: Request, identity: Annotated[Identity, Depends(current)]
        ) -> Identity:
            now = gatepass_of(request.app).clock()
            check_principal(identity, now, max_age=max_age, second_factor=second_factor)
            return identity

        return checked


_default = GatepassSecurity()
#: Dependencies of the default (secure cookie name) :class:`GatepassSecurity`.
optional_identity = _default.optional_identity
current_identity = _default.current_identity


def require_roles(*roles: str) -> Callable[..., Awaitable[Identity]]:
    """``Depends(require_roles("admin"))``: the caller, holding every role named."""
    return _default.require_roles(*roles)


def require_fresh_sign_in(max_age: int) -> Callable[..., Awaitable[Identity]]:
    """``Depends(require_fresh_sign_in(300))``: the caller, signed in (or
    reauthenticated) within ``max_age`` seconds."""
    return _default.require_sign_in(max_age=max_age)


def require_second_factor() -> Callable[..., Awaitable[Identity]]:
    """``Depends(require_second_factor())``: the caller, signed in with two factors."""
    return _default.require_sign_in(second_factor=True)


__all__ = [
    "BEARER_SCHEME",
    "COOKIE_SCHEME",
    "GatepassLifespan",
    "GatepassSecurity",
    "auth_router",
    "current_identity",
    "gatepass_lifespan",
    "install",
    "optional_identity",
    "require_fresh_sign_in",
    "require_roles",
    "require_second_factor",
]
