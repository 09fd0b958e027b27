"""``GET /auth/me`` as a pure ASGI endpoint, served ahead of Starlette's router.

It is the request clients make most (every page load of a SPA, every service
asking who it talks to), so it skips what it does not need: routing, the
middleware chain, Request and Response objects, per-request JSON encoding of an
unchanged answer. It keeps every rule of the routed version:

* the credential choice of :func:`gatepass.web.request_credentials` (Bearer first,
  never a fallback to the cookie, a session cookie sent twice is no credential);
* the authenticator's checks, unchanged (signature, expiry, revocation, the user's
  current roles; session idle and absolute timeouts and ``last_seen_at`` writes);
* errors as problem+json from :func:`gatepass.web.problem_for`, with
  ``WWW-Authenticate`` on a 401 and ``Retry-After`` on a 503;
* ``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff`` (the
  headers :class:`~gatepass.server.middleware.SecurityHeaders` adds to JSON).

Other methods and paths (``POST /auth/me``'s 405, ``/auth/me/``'s 404) are left
to the router.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gatepass.authenticator import Identity
from gatepass.core import Gatepass
from gatepass.errors import GatepassError, StoreUnavailable
from gatepass.server.api import me_json
from gatepass.server.middleware import NOSNIFF
from gatepass.web import PROBLEM_MEDIA_TYPE, problem_body, problem_for, request_credentials

logger = logging.getLogger("gatepass.server")

ME_PATH = "/auth/me"
ME_METHODS = frozenset({"GET", "HEAD"})
#: Distinct answers kept encoded (one per user, credential kind and roles seen).
BODY_CACHE_SIZE = 10_000

# The same encoding as Starlette's JSONResponse.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_NO_STORE = (b"cache-control", b"no-store")
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", PROBLEM_MEDIA_TYPE.encode("ascii"))


def route_path(scope: Scope) -> str:
    """The path the router would match: ``path`` less any ``root_path`` (as Starlette)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def is_me_request(scope: Scope) -> bool:
    """``GET`` or ``HEAD`` of exactly ``/auth/me`` (no trailing slash)."""
    return (
        scope["type"] == "http" and scope["method"] in ME_METHODS and route_path(scope) == ME_PATH
    )


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers}


def _body(body: bytes) -> Message:
    return {"type": "http.response.body", "body": body}


class MeEndpoint:
    """Answers ``GET /auth/me`` for one opened :class:`Gatepass`."""

    def __init__(self, gatepass: Gatepass, session_cookie_name: str) -> None:
        self.gatepass = gatepass
        self._authenticate = gatepass.authenticator.authenticate
        self._cookie_name = session_cookie_name
        # Everything the answer holds (user id, email, verified, roles, method,
        # auth_time, amr) -> the encoded answer and its length.
        self._answers: dict[tuple[object, ...], tuple[bytes, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization: str | None = None
        cookies: list[str] = []
        for name, value in scope["headers"]:
            # As Starlette's request.headers: the first Authorization, every Cookie line.
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"cookie":
                cookies.append(value.decode("latin-1"))
        try:
            credentials = request_credentials(authorization, "; ".join(cookies), self._cookie_name)
            identity = await self._authenticate(*credentials)
        except GatepassError as exc:
            await self._refuse(exc, send)
            return
        except Exception:
            # A bug: 500 with no text, and the exception goes on to the server's log.
            await self._problem(500, {}, problem_body(500), send)
            raise
        body, length = self._answer(identity)
        await send(_start(200, [_NO_STORE, (b"content-length", length), _JSON, NOSNIFF]))
        await send(_body(body))

    def _answer(self, identity: Identity) -> tuple[bytes, bytes]:
        user = identity.user
        key = (
            user.id,
            user.email,
            user.email_verified,
            user.roles,
            identity.method,
            int(identity.auth_time),
            identity.amr,
        )
        answer = self._answers.get(key)
        if answer is None:
            body = _encode(me_json(identity)).encode("utf-8")
            answer = (body, str(len(body)).encode("ascii"))
            if len(self._answers) >= BODY_CACHE_SIZE:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    async def _refuse(self, exc: GatepassError, send: Send) -> None:
        answer = problem_for(exc)
        if answer is None:
            await self._problem(500, {}, problem_body(500), send)
            raise exc
        if isinstance(exc, StoreUnavailable):
            logger.error("store unavailable: %s", exc)
        await self._problem(answer.status, answer.headers, answer.body, send)

    @staticmethod
    async def _problem(status: int, headers: Any, document: Any, send: Send) -> None:
        body = _encode(dict(document)).encode("utf-8")
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw += [(b"content-length", str(len(body)).encode("ascii")), _PROBLEM, NOSNIFF]
        await send(_start(status, raw))
        await send(_body(body))
