"""Serve gatepass's own routes from a sync framework: one request in, through the
auth server's ASGI app, one response out.

The Flask blueprint and the Django URLs forward to the very app ``gatepass serve``
runs, so the routes keep every rule of the HTTP contract (status codes, bodies,
cookies, CSRF) with no second implementation to drift. The whole body is read
before the call and the whole answer collected after it: these routes answer small
JSON or HTML documents, never streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

#: Bodies larger than the server's own limit are refused by the app; this caps what a
#: bridge ever holds in memory before the app sees it.
MAX_BRIDGED_BODY = 64 * 1024 + 1


@dataclass(frozen=True, slots=True)
class BridgedRequest:
    """Plain facts of one HTTP request, as the sync framework parsed them."""

    method: str
    path: str
    query_string: bytes = b""
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    scheme: str = "http"
    root_path: str = ""


@dataclass(slots=True)
class BridgedResponse:
    status: int = 500
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


async def call_asgi(app: ASGIApp, request: BridgedRequest) -> BridgedResponse:
    """Run one HTTP request through ``app`` and collect its answer."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method.upper(),
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode("utf-8", "surrogateescape"),
        "root_path": request.root_path,
        "query_string": request.query_string,
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": request.client,
        "server": request.server,
        "state": {},
    }
    body_sent = False
    response = BridgedResponse()
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal body_sent
        if body_sent:
            # The whole request was handed over; there is no disconnect to report
            # (the sync server holds the client), so a further receive() waits, as it
            # would on an open connection. A long poll asking "disconnected yet?"
            # must not read an answer into this.
            await asyncio.Event().wait()
        body_sent = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = int(message["status"])
            response.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, send)
    response.body = b"".join(chunks)
    return response
