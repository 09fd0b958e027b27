"""uvicorn's httptools protocol with limits on the request head and on connections.

uvicorn has no deadline for a request head and httptools no cap on its size, so a
client could hold a connection open forever by trickling header bytes, or make
the server buffer a header of any size. :class:`LimitedHttpToolsProtocol` adds:

- a cap on the bytes of each request head (request line and headers). The parser
  is never fed more than the cap; a head that does not end within it is answered
  ``431`` and the connection is closed at once, without reading further.
- a deadline for each head: counted from the moment the connection is made, and
  on a keep-alive connection from the first byte of each further request, until
  the head is complete. A client that misses it gets ``408`` (or, if it sent
  nothing at all, just a closed connection).
- a cap on open connections per process: a connection beyond it is closed as
  soon as it is accepted, before anything is read. Refusing costs the server no
  memory and no time, which a ``503`` (that must wait for the request) would.
- a connection whose request was answered before its body was read to the end
  is closed when more of that body arrives, instead of reading and discarding
  whatever the client keeps sending.

- in a chunked body, the chunk lines, extensions and trailers beyond
  :data:`CHUNK_FRAMING_ALLOWANCE` bytes per chunk count against the same cap:
  the parser buffers trailers like headers. Over it, the connection is closed.

The body's data itself is bounded by the application
(:data:`gatepass.server.requests.MAX_BODY_BYTES`).

Cost on the hot path: one overridden call and a length comparison per read; a
timer only per connection and for heads that do not arrive in one read.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import resource
import time
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gatepass.server.problems import PROBLEM_MEDIA_TYPE

logger = logging.getLogger("gatepass.server")
#: At most one warning about refused connections per this many seconds.
REFUSAL_WARNING_INTERVAL = 10.0
#: Bytes of framing each chunk of a chunked body may bring for free ("1\r\nX\r\n" is
#: 4 besides its data); beyond that, framing and trailers count against the head cap.
#: Go's net/http draws the same line (16 bytes per chunk) against chunk floods.
CHUNK_FRAMING_ALLOWANCE = 16
#: File descriptors a process needs besides its client connections (stores, logs).
FD_HEADROOM = 64


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Limits of the HTTP layer (``GATEPASS_MAX_HEADER_BYTES`` and friends)."""

    max_header_bytes: int
    header_timeout: float
    max_connections: int


@dataclass(slots=True)
class RefusalLog:
    """Counts refused connections and warns about them at most every few seconds.

    One per process (each worker unpickles its own copy), so a flood of refused
    connections writes a handful of log lines, not one per connection.
    """

    refused: int = 0
    last_warning: float = field(default=float("-inf"))

    def note(self, max_connections: int) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.last_warning >= REFUSAL_WARNING_INTERVAL:
            logger.warning(
                "refused %d connection(s) over GATEPASS_MAX_CONNECTIONS (%d open)",
                self.refused,
                max_connections,
            )
            self.refused = 0
            self.last_warning = now


def _problem_response(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete ``Connection: close`` problem+json response, written by hand.

    These answers are sent before any ASGI application runs, so they cannot go
    through :func:`gatepass.server.problems.problem`.
    """
    status_line = STATUS_LINE[status]
    title = status_line.split(b" ", 2)[2].strip().decode("ascii")
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode("ascii")
    head = [status_line]
    for name, value in default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.extend(
        [
            b"content-type: " + PROBLEM_MEDIA_TYPE.encode("ascii") + b"\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n\r\n",
        ]
    )
    return b"".join(head) + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a head size cap, a head deadline and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
        refusals: RefusalLog,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._max_head = limits.max_header_bytes  # read on every request: one lookup
        self._refusals = refusals
        self._refused = False
        # Bytes received since the last head was complete (or the connection began)
        # while no body was being read: the head of the next request.
        self._head_bytes = 0
        self._head_timer: TimerHandle | None = None
        self._head_deadline = 0.0
        # Body bytes received minus body bytes delivered (chunk framing, trailers),
        # and the chunks seen, of the current request.
        self._framing_bytes = 0
        self._chunks = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            # Closed before it is registered or read: it costs nothing but the accept.
            self._refused = True
            self._refusals.note(self._limits.max_connections)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Everything is decided here, on the one call per read, so that a request
        # whose head arrives in one read pays a comparison and no timer.
        cycle = self.cycle
        if cycle is not None and cycle.more_body:
            # The body of the current request.
            if cycle.response_complete:
                # Answered without reading the whole body: reading and discarding
                # the rest would let a client keep the connection forever.
                self.transport.close()
                return
            self._framing_bytes += len(data)
            super().data_received(data)
            if (
                self._framing_bytes - CHUNK_FRAMING_ALLOWANCE * self._chunks > self._max_head
                and not self.transport.is_closing()
            ):
                self._refuse_framing()
            return
        room = self._max_head - self._head_bytes
        part = data if len(data) <= room else data[:room]
        self._head_bytes += len(part)
        # The parser is never fed more head than the cap.
        HttpToolsProtocol.data_received(self, part)
        if self.cycle is not cycle:
            # A head is complete. Bytes of a request pipelined behind it in this
            # read are not counted: the cap can be exceeded by at most one read.
            self._head_bytes = self._framing_bytes = self._chunks = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if part is not data and not self.transport.is_closing():
                self.data_received(data[room:])  # body, or the next request
            return
        if self.transport.is_closing():
            return
        if part is not data:
            self._refuse_head()
        elif self._head_timer is None and self._head_bytes:
            # A further request on a keep-alive connection has begun.
            self._arm_head_timer()

    def on_body(self, body: bytes) -> None:
        self._framing_bytes -= len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    # Refusals

    def send_400_response(self, msg: str) -> None:
        # Same as uvicorn's, as problem+json like every other error of the server.
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if self._can_answer():
            detail = "Invalid HTTP request."
            self.transport.write(_problem_response(400, detail, self.server_state.default_headers))
        self.transport.close()

    def _can_answer(self) -> bool:
        """Whether an answer now would not interleave with a response in progress."""
        return self.cycle is None or self.cycle.response_complete

    def _refuse_head(self) -> None:
        logger.warning(
            "%srequest head over GATEPASS_MAX_HEADER_BYTES (%d): answered 431",
            self._client_prefix(),
            self._limits.max_header_bytes,
        )
        self._cancel_head_timer()
        if self._can_answer():
            detail = "The request line and headers are too large."
            self.transport.write(_problem_response(431, detail, self.server_state.default_headers))
        self.transport.close()

    def _refuse_framing(self) -> None:
        # A chunked body whose chunk lines, extensions or trailers (which the parser
        # buffers like headers) outgrow the head cap. The application is still
        # reading this request, so there is no answer to give: only close.
        logger.warning(
            "%schunk framing or trailers over GATEPASS_MAX_HEADER_BYTES (%d): closed",
            self._client_prefix(),
            self._limits.max_header_bytes,
        )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_deadline = time.monotonic() + self._limits.header_timeout
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        left = self._head_deadline - time.monotonic()
        if left > 0:
            # uvloop measures timers from the time its current loop iteration
            # started; after a long iteration a timer can fire early.
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        logger.debug(
            "%srequest head not complete within GATEPASS_HEADER_TIMEOUT", self._client_prefix()
        )
        if self._head_bytes and self._can_answer():
            detail = "The request line and headers did not arrive in time."
            self.transport.write(_problem_response(408, detail, self.server_state.default_headers))
        self.transport.close()

    def _client_prefix(self) -> str:
        return f"{self.client[0]}:{self.client[1]} - " if self.client else ""


def protocol_factory(limits: ConnectionLimits) -> Callable[..., asyncio.Protocol]:
    """The ``http`` argument for uvicorn: picklable, so ``--workers N`` gets it too."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits, refusals=RefusalLog())


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so ``max_connections`` can be reached.

    Otherwise a default soft limit of 1024 would make accept() fail before the
    connection cap refuses anything. Workers inherit the limit.
    """
    needed = max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "open-files limit %d is below GATEPASS_MAX_CONNECTIONS + %d: raise it (ulimit -n)",
            soft,
            FD_HEADROOM,
        )
