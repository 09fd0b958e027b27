"""uvicorn's httptools protocol with limits on request heads, stalls and connections.

uvicorn has no deadline for a request head, no timeout for a stalled body or a
client that stops reading, and httptools no cap on a head's size, so a client could
hold a connection open forever or make the server buffer a header of any size.
:class:`LimitedHttpToolsProtocol` adds:

- a cap on the bytes of each request head (request line and headers), pipelined
  heads included. The parser is never fed more head than the cap; a head that does
  not end within it is answered ``431`` and the connection is closed at once.
- a deadline for each head: counted from the moment the connection is made, and
  on a keep-alive connection from the first byte of each further request, until
  the head is complete. A client that misses it gets ``408`` (or, if it sent
  nothing at all, just a closed connection).
- a read stall timeout: while the application waits for more of a request body,
  a client that sends no byte for the same number of seconds gets ``408`` and is
  disconnected. Time during which the server itself is not reading (its reading
  paused, or ``100 Continue`` not sent yet) does not count.
- a write stall timeout: while responses wait for the client to take them (the
  transport paused for writing, or closing with bytes still unsent), a client that
  takes none of them for that many seconds is disconnected at once.
- a cap on open connections per process: a connection beyond it is closed as
  soon as it is accepted, before anything is read. Refusing costs the server no
  memory and no time, which a ``503`` (that must wait for the request) would.
- a response started before its request's body was read to the end carries
  ``Connection: close``, and the connection is closed after it.
- in a chunked body, trailers are dropped (never added to the request headers)
  and count against the head cap on their own; chunk lines and extensions beyond
  :data:`CHUNK_FRAMING_ALLOWANCE` bytes per chunk count against it too, with no
  credit carried from one read to the next. Over the cap, the connection is closed.

The body's data itself is bounded by the application
(:data:`gatepass.server.requests.MAX_BODY_BYTES`).

Cost on the hot path: a search for the end of the head and a comparison per read,
one parser call per request (two with a body); a timer only per connection and
for heads or bodies that do not arrive in one read.
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
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from gatepass.web import PROBLEM_MEDIA_TYPE

logger = logging.getLogger("gatepass.server")
#: At most one warning of each kind (refused connections, oversized heads,
#: oversized chunk framing) per this many seconds.
REFUSAL_WARNING_INTERVAL = 10.0
#: Bytes of framing each chunk of a chunked body may bring for free ("1\r\nX\r\n" is
#: 5 besides its data); beyond that, chunk lines and extensions count against the
#: head cap. Go's net/http draws the same line (16 bytes per chunk) against chunk floods.
CHUNK_FRAMING_ALLOWANCE = 16
#: File descriptors a process needs besides its client connections (stores, logs).
FD_HEADROOM = 64
#: The end of a request head. llhttp (as uvicorn configures it) insists on CRLF,
#: so a head ends at the first of these after its request line, and nowhere else.
_HEAD_END = b"\r\n\r\n"
#: uvicorn's reading of one piece of input (error handling included); httptools
#: takes any buffer, so a piece of a read is passed as a memoryview, without a copy.
_feed: Callable[[HttpToolsProtocol, bytes | memoryview], None] = HttpToolsProtocol.data_received  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Limits of the HTTP layer (``GATEPASS_MAX_HEADER_BYTES`` and friends).

    ``header_timeout`` (``GATEPASS_HEADER_TIMEOUT``) is the head deadline and also
    the read and write stall timeout.
    """

    max_header_bytes: int
    header_timeout: float
    max_connections: int


@dataclass(slots=True)
class WarningLog:
    """Counts one kind of refusal and warns about it at most every few seconds.

    One per kind and process (each worker unpickles its own copy), so a flood of
    refusals writes a handful of log lines, not one per connection. ``message``
    is formatted with the count and the limit.
    """

    message: str
    refused: int = 0
    last_warning: float = field(default=float("-inf"))

    def note(self, limit: int, client: str = "") -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.last_warning >= REFUSAL_WARNING_INTERVAL:
            logger.warning("%s" + self.message, client, self.refused, limit)
            self.refused = 0
            self.last_warning = now


@dataclass(frozen=True, slots=True)
class Warnings:
    """The rate-limited warnings of one process."""

    connections: WarningLog = field(
        default_factory=lambda: WarningLog(
            "refused %d connection(s) over GATEPASS_MAX_CONNECTIONS (%d open)"
        )
    )
    heads: WarningLog = field(
        default_factory=lambda: WarningLog(
            "%d request head(s) over GATEPASS_MAX_HEADER_BYTES (%d): answered 431"
        )
    )
    framing: WarningLog = field(
        default_factory=lambda: WarningLog(
            "%d chunked body(ies) with framing or trailers over GATEPASS_MAX_HEADER_BYTES"
            " (%d): closed"
        )
    )


def _problem_response(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete ``Connection: close`` problem+json response, written by hand.

    These answers are sent outside any ASGI application, so they cannot go
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


class _WatchedFlowControl(FlowControl):
    """uvicorn's flow control, telling the protocol whenever the server wants bytes again.

    ``receive()`` of the ASGI application calls :meth:`resume_reading` each time it
    waits for more body (after sending ``100 Continue`` if one is due), so this is
    where a read stall starts to be the client's.
    """

    def __init__(self, transport: asyncio.Transport, on_reading: Callable[[], None]) -> None:
        super().__init__(transport)
        self._on_reading = on_reading

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()
        self._on_reading()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with head, stall and connection limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
        warnings: Warnings,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._max_head = limits.max_header_bytes  # read on every request: one lookup
        self._timeout = limits.header_timeout
        self._warnings = warnings
        self._refused = False
        # Bytes of the request head being received (0 between requests), and the
        # last bytes of it, in case its end is split between two reads.
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer: TimerHandle | None = None
        self._head_deadline = 0.0
        # The body of the current request: its Content-Length as sent, the body
        # bytes the parser still expects (None when unknown: chunked), the chunks
        # seen, framing bytes beyond the allowance, and trailer bytes.
        self._content_length: bytes | None = None
        self._body_left: int | None = None
        self._chunks = 0
        self._framing_excess = 0
        self._trailer_bytes = 0
        # Read stall: armed while a body is incomplete; the last moment the server
        # heard from the client or asked it for more.
        self._read_timer: TimerHandle | None = None
        # Timers that expired once and were given one more loop turn (_recheck).
        self._rechecked: set[str] = set()
        self._read_since = 0.0
        # A cycle whose body is still incomplete answers with Connection: close;
        # its own keep-alive, given back if the body completes before the answer.
        self._held_cycle: RequestResponseCycle | None = None
        self._held_keep_alive = False
        # Write stall: armed while responses wait for the client; the bytes that
        # were waiting when it was last checked.
        self._write_timer: TimerHandle | None = None
        self._write_waiting = 0
        # The cycle whose application runs (with pipelining, not always self.cycle).
        self._running_cycle: RequestResponseCycle | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            # Closed before it is registered or read: it costs nothing but the accept.
            self._refused = True
            self._warnings.connections.note(self._limits.max_connections)
            transport.close()
            return
        super().connection_made(transport)
        self.flow = _WatchedFlowControl(transport, self._reading_wanted)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._read_timer = self._write_timer = None
        if self._refused:
            return
        running = self._running_cycle
        if running is not None and not running.response_complete:
            # uvicorn tells only the last request parsed; a pipelined one before it,
            # waiting to write, would write into the closed transport.
            running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running_cycle = cycle
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        # One read may hold many requests: each is fed to the parser on its own, so
        # that the head cap and the head deadline apply to every one of them.
        pos = 0
        end = len(data)
        transport = self.transport
        while pos < end:
            cycle = self.cycle
            if cycle is not None and cycle.more_body:
                pos = self._feed_body(cycle, data, pos, end)
            else:
                pos = self._feed_head(cycle, data, pos, end)
            if pos < 0 or transport.is_closing():
                return
        self._read_done()

    def _feed_head(
        self, cycle: RequestResponseCycle | None, data: bytes, pos: int, end: int
    ) -> int:
        """Feed the parser the next head in ``data[pos:end]``, never beyond the cap.

        Returns where the unread rest starts, or -1 when the connection changed hands.
        """
        room = self._max_head - self._head_bytes
        cut = -1
        if self._head_bytes and pos == 0:
            # The end of this head may straddle the previous read and this one.
            tail = self._head_tail
            across = (tail + data[:3]).find(_HEAD_END)
            if across >= 0:
                cut = across + 4 - len(tail)
        if cut < 0:
            found = data.find(_HEAD_END, pos, pos + room)
            if found >= 0:
                cut = found + 4
        if cut < 0 or cut - pos > room:
            cut = min(end, pos + room)
        self._head_bytes += cut - pos
        # The common case, a whole read that is one head, is fed without a copy.
        _feed(self, data if pos == 0 and cut == end else memoryview(data)[pos:cut])
        if self.cycle is not cycle:
            # A head is complete, and nothing after it was fed.
            self._request_began()
            return cut
        if self.transport.is_closing():
            return cut
        if self.transport.get_protocol() is not self:
            return -1  # upgraded to another protocol
        if self._head_bytes >= self._max_head:
            self._refuse_head()
        elif cut == end:
            self._head_tail = data[max(pos, end - 3) : end]
        return cut

    def _request_began(self) -> None:
        """Reset the accounting for the request whose head just completed."""
        self._head_bytes = 0
        self._head_tail = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        length = self._content_length
        self._content_length = None
        # The parser has refused any other spelling of it.
        self._body_left = int(length) if length is not None and length.strip().isdigit() else None
        self._chunks = self._framing_excess = self._trailer_bytes = 0

    def _feed_body(self, cycle: RequestResponseCycle, data: bytes, pos: int, end: int) -> int:
        """Feed the parser body bytes of the current request from ``data[pos:end]``."""
        if cycle.response_complete:
            # Answered without reading the whole body (and so with Connection:
            # close): reading and discarding the rest would let a client keep the
            # connection forever.
            self._close()
            return end
        left = self._body_left
        if left is not None and left > 0:
            # Content-Length: exactly the body, so what follows is the next head.
            cut = end if end - pos <= left else pos + left
            self._body_left = left - (cut - pos)
            _feed(self, data if pos == 0 and cut == end else memoryview(data)[pos:cut])
            return cut
        # Chunked (or unknown): all of it; what is not body data is framing.
        before = len(cycle.body)
        chunks = self._chunks
        _feed(self, data if pos == 0 else memoryview(data)[pos:])
        if self.transport.is_closing():
            return end
        framing = (end - pos) - (len(cycle.body) - before)
        self._framing_excess = max(
            0, self._framing_excess + framing - CHUNK_FRAMING_ALLOWANCE * (self._chunks - chunks)
        )
        if self._framing_excess > self._max_head:
            self._refuse_framing()
            return end
        if self.scope is not self.cycle.scope or self.cycle is not cycle:
            # The body ended in this read and a further request began in it. Where
            # is not known: count every non-body byte of the read as its head.
            if self.cycle is not cycle:
                self._request_began()
                self._body_left = None
            if self.scope is not self.cycle.scope:
                self._head_bytes = framing
                if self._head_bytes >= self._max_head:
                    self._refuse_head()
        return end

    def _read_done(self) -> None:
        """After a read: timers for what is still incomplete, keep-alive for early answers."""
        held = self._held_cycle
        if held is not None and not held.more_body:
            # The body is complete before the answer began: keep-alive as asked.
            if not held.response_started:
                held.keep_alive = self._held_keep_alive
            self._held_cycle = None
        if self._head_bytes:
            if self._head_timer is None:
                # A further request on a keep-alive connection has begun.
                self._arm_head_timer()
            return
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            if self._held_cycle is None and not cycle.response_started:
                # An answer begun before the body is read to the end must close the
                # connection: the rest of the body would be taken for a request.
                self._held_cycle = cycle
                self._held_keep_alive = cycle.keep_alive
                cycle.keep_alive = False
            self._read_since = time.monotonic()
            if self._read_timer is None:
                self._rechecked.discard("read")
                self._read_timer = self.loop.call_later(self._timeout, self._read_stalled)

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # A trailer of the current request's chunked body: dropped (uvicorn would
            # append it to headers the application already has), only counted.
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self._max_head and not self.transport.is_closing():
                self._refuse_framing()
            return
        name = name.lower()
        if name == b"content-length":
            self._content_length = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_chunk_header(self) -> None:
        self._chunks += 1

    # Stalls

    def _reading_wanted(self) -> None:
        # The application waits for the client (or the server resumed reading).
        if self._read_timer is not None:
            self._read_since = time.monotonic()

    def _read_stalled(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        if (
            self.transport.is_closing()
            or cycle is None
            or not cycle.more_body
            or cycle.response_complete
        ):
            return
        now = time.monotonic()
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The server is not asking for bytes: not the client's stall.
            self._read_since = now
        left = self._read_since + self._timeout - now
        if left > 0:
            self._read_timer = self.loop.call_later(left, self._read_stalled)
            return
        if self._recheck(self._read_stalled, "read"):
            return
        logger.debug("%srequest body stalled for GATEPASS_HEADER_TIMEOUT", self._client_prefix())
        if not cycle.response_started:
            detail = "The request body did not arrive in time."
            self.transport.write(_problem_response(408, detail, self.server_state.default_headers))
        self._close()

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._write_timer is not None and not self.transport.is_closing():
            self._write_timer.cancel()
            self._write_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            self._watch_writes()  # a Connection: close answer may still be unsent

    def timeout_keep_alive_handler(self) -> None:
        self._close()

    def shutdown(self) -> None:
        self._held_cycle = None  # keep-alive stays off
        super().shutdown()

    def _close(self) -> None:
        """Close the connection; if bytes are still unsent, give the client a deadline."""
        if not self.transport.is_closing():
            self.transport.close()
        self._watch_writes()

    def _watch_writes(self) -> None:
        if self._write_timer is not None:
            return
        waiting = self.transport.get_write_buffer_size()
        if waiting:
            self._write_waiting = waiting
            self._write_timer = self.loop.call_later(self._timeout, self._write_stalled)

    def _write_stalled(self) -> None:
        self._write_timer = None
        waiting = self.transport.get_write_buffer_size()
        if not waiting or not (self.flow.write_paused or self.transport.is_closing()):
            return
        if waiting < self._write_waiting:
            # The client took some: not stalled.
            self._write_waiting = waiting
            self._write_timer = self.loop.call_later(self._timeout, self._write_stalled)
            return
        logger.debug(
            "%sresponse not read for GATEPASS_HEADER_TIMEOUT: aborted", self._client_prefix()
        )
        # close() would wait for the unsent bytes forever.
        self.transport.abort()

    # Refusals

    def send_400_response(self, msg: str) -> None:
        # Same as uvicorn's, as problem+json like every other error of the server.
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if self._can_answer():
            detail = "Invalid HTTP request."
            self.transport.write(_problem_response(400, detail, self.server_state.default_headers))
        self._close()

    def _can_answer(self) -> bool:
        """Whether an answer now would not interleave with a response in progress."""
        return self.cycle is None or self.cycle.response_complete

    def _refuse_head(self) -> None:
        self._warnings.heads.note(self._limits.max_header_bytes, self._client_prefix())
        self._cancel_head_timer()
        if self._can_answer():
            detail = "The request line and headers are too large."
            self.transport.write(_problem_response(431, detail, self.server_state.default_headers))
        self._close()

    def _refuse_framing(self) -> None:
        # A chunked body whose chunk lines, extensions or trailers (which the parser
        # buffers like headers) outgrow the head cap. The application is still
        # reading this request, so there is no answer to give: only close.
        self._warnings.framing.note(self._limits.max_header_bytes, self._client_prefix())
        self._close()

    def _arm_head_timer(self) -> None:
        self._rechecked.discard("head")
        self._head_deadline = time.monotonic() + self._timeout
        self._head_timer = self.loop.call_later(self._timeout, self._head_timed_out)

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
        if self._recheck(self._head_timed_out, "head"):
            return
        logger.debug(
            "%srequest head not complete within GATEPASS_HEADER_TIMEOUT", self._client_prefix()
        )
        if self._head_bytes and self._can_answer():
            detail = "The request line and headers did not arrive in time."
            self.transport.write(_problem_response(408, detail, self.server_state.default_headers))
        self._close()

    def _recheck(self, callback: Callable[[], None], timer: str) -> bool:
        """Give an expired timer one more turn of the loop before it acts.

        Each loop iteration runs due timers before it delivers I/O, so after the
        loop was busy past a deadline (a long request, a starved process) the
        client's bytes may be waiting unseen. The timer is re-armed at zero delay
        once; by then pending reads have reached ``data_received`` (which cancels
        or resets it). ``True`` when it was re-armed and must not act yet.
        """
        if timer in self._rechecked:
            self._rechecked.discard(timer)
            return False
        self._rechecked.add(timer)
        handle = self.loop.call_later(0, callback)
        if timer == "head":
            self._head_timer = handle
        else:
            self._read_timer = handle
        return True

    def _client_prefix(self) -> str:
        return f"{self.client[0]}:{self.client[1]} - " if self.client else ""


def protocol_factory(limits: ConnectionLimits) -> Callable[..., asyncio.Protocol]:
    """The ``http`` argument for uvicorn: picklable, so ``--workers N`` gets it too."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits, warnings=Warnings())


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
