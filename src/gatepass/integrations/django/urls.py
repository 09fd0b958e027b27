"""gatepass's own routes inside a Django project (embedded mode)::

    urlpatterns = [path("", include("gatepass.integrations.django.urls")), ...]

``auth/...``, ``.well-known/jwks.json``, ``login``, ``account`` and ``static/...``
are forwarded to the auth server's own ASGI app (``create_app(gatepass=...)``) on
the process's loop thread, so they keep every rule of the HTTP contract: status
codes, bodies, cookies and gatepass's CSRF (which is why Django's CSRF middleware
is told to leave them alone). Include them at the root: the HTML pages and cookies
use absolute paths. In resource-server mode they answer 404.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.urls import re_path  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from gatepass.errors import GatepassError, NotFound
from gatepass.integrations._bridge import MAX_BRIDGED_BODY, BridgedRequest, BridgedResponse
from gatepass.integrations.django._runtime import problem_response
from gatepass.integrations.django.apps import app_config
from gatepass.integrations.django.middleware import BRIDGE_ATTRIBUTE

#: Header names Django keeps outside ``HTTP_*`` in ``META``.
_UNPREFIXED = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}
#: Headers of the bridged answer that Django computes or carries itself.
_SKIPPED = frozenset({"content-length", "set-cookie"})


def _headers(request: HttpRequest) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for key, value in request.META.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower().encode("latin-1")
        elif key in _UNPREFIXED:
            name = _UNPREFIXED[key]
        else:
            continue
        if isinstance(value, str) and value != "":
            headers.append((name, value.encode("latin-1", "replace")))
    return headers


def _body(request: HttpRequest) -> bytes:
    if hasattr(request, "_body"):  # something read it already
        return bytes(request.body[:MAX_BRIDGED_BODY])
    # Read no more than the server would accept (plus one byte, so it sees it is
    # too long and answers 413): Django's own upload limit is far larger.
    return bytes(request.read(MAX_BRIDGED_BODY))


def _address(host: object, port: object) -> tuple[str, int] | None:
    if not isinstance(host, str) or not host:
        return None
    try:
        return host, int(str(port or 0))
    except ValueError:
        return host, 0


def _django_response(answer: BridgedResponse) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status)
    del response["Content-Type"]
    for name, value in answer.headers:
        lowered = name.lower()
        if lowered == "set-cookie":
            # Django writes one Set-Cookie line per morsel; loading the line keeps
            # every attribute the server gave it.
            response.cookies.load(value)
        elif lowered not in _SKIPPED:
            response[name] = f"{response[name]}, {value}" if name in response else value
    return response


def gatepass_route(request: HttpRequest, route: str) -> HttpResponse:
    """Forward one request to gatepass's own app and return its answer unchanged."""
    runtime = app_config().runtime
    path = request.path
    own_path = "/" + route
    root_path = path[: len(path) - len(own_path)] if path.endswith(own_path) else ""
    bridged = BridgedRequest(
        method=request.method or "GET",
        path=path,
        query_string=request.META.get("QUERY_STRING", "").encode("latin-1", "replace"),
        headers=_headers(request),
        body=_body(request),
        client=_address(request.META.get("REMOTE_ADDR"), request.META.get("REMOTE_PORT")),
        server=_address(request.META.get("SERVER_NAME"), request.META.get("SERVER_PORT")),
        scheme=request.scheme or "http",
        root_path=root_path,
    )
    try:
        answer = runtime.bridge(bridged)
        if answer is None:
            raise NotFound()
    except GatepassError as exc:
        return problem_response(exc)
    return _django_response(answer)


# Django's CSRF stands aside: the auth server's app enforces gatepass's own rule.
gatepass_route = csrf_exempt(gatepass_route)
setattr(gatepass_route, BRIDGE_ATTRIBUTE, True)

_ROUTES = (
    r"auth/.*|\.well-known/jwks\.json|login|account|static/.*"
    r"|register|forgot-password|reset-password|verify-email"
)

app_name = "gatepass"
urlpatterns: list[Any] = [
    re_path(rf"^(?P<route>{_ROUTES})\Z", gatepass_route, name="routes"),
]
