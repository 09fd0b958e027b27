"""``GatepassMiddleware``: who is calling, by gatepass's rules, for every host view.

It sets ``request.gatepass_identity`` to the principal (an
:class:`~gatepass.authenticator.Identity` in embedded mode, a
:class:`gatepass.verifier.VerifiedToken` in resource-server mode) or ``None``
when the request carries no credential. A credential that fails is answered at
once: 401 problem+json with ``WWW-Authenticate``; a failed CSRF check 403; a
store that cannot be reached 503 with ``Retry-After``. A bad Bearer token never
falls back to the cookie.

**CSRF.** gatepass's rule guards gatepass's cookie: a request authenticated by it
with an unsafe method needs ``X-CSRF-Token`` (or the ``csrf_token`` form field)
and a trusted ``Origin``. Django's ``CsrfViewMiddleware`` keeps guarding Django's
own session cookie. It is told to stand aside only for a request gatepass
authenticated with proof of its own (a Bearer token, or gatepass's cookie plus its
CSRF token) that carries no Django session cookie: such a request has no ambient
Django credential for a forged form to ride on. Place this middleware before
``CsrfViewMiddleware`` (system check ``gatepass.W001`` says so otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]

from gatepass.errors import GatepassError
from gatepass.integrations.django._runtime import (
    Principal,
    authenticate_request,
    problem_response,
)
from gatepass.integrations.django.apps import app_config

#: Set on a request once the middleware judged it (so DRF does not judge it again).
CHECKED_ATTRIBUTE = "_gatepass_checked"
#: Set on gatepass's own bridged views: the auth server's app judges those itself.
BRIDGE_ATTRIBUTE = "gatepass_bridge"


class GatepassMiddleware:
    """Authenticates requests to the host app's views by gatepass's hybrid rules."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._app = app_config()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.gatepass_identity = None
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        if getattr(view_func, BRIDGE_ATTRIBUTE, False):
            return None
        try:
            principal = authenticate_request(self._app.runtime, request)
        except GatepassError as exc:
            return problem_response(exc)
        request.gatepass_identity = principal
        setattr(request, CHECKED_ATTRIBUTE, True)
        if principal is not None and not _carries_django_session(request):
            # Proven by gatepass (Bearer, or its cookie and CSRF token) and no Django
            # session to protect: Django's CSRF token would guard nothing here.
            request._dont_enforce_csrf_checks = True
        return None


def _carries_django_session(request: HttpRequest) -> bool:
    return bool(request.COOKIES.get(settings.SESSION_COOKIE_NAME))


def identity_of(request: HttpRequest) -> Principal | None:
    """``request.gatepass_identity``, for code that prefers a function."""
    principal: Principal | None = getattr(request, "gatepass_identity", None)
    return principal
