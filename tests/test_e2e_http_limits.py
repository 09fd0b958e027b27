"""Huge, slow and many requests against the real ``gatepass serve``, over raw sockets.

Each test plays the attacker on loopback: an endless header, a slow-loris trickle,
a stalled keep-alive request, a connection flood, a body that never ends, a
stalled body, a client that never reads its answers, trailer floods, pipelined
bursts, a client that hangs up mid-body. Limits are made small through the environment so
the server gives up on the attacker within a second or two; every loop here is
bounded, and a test fails (instead of hanging) when the server keeps waiting.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e_support import (
    RunningServer,
    gatepass_command,
    run_serve_expecting_exit,
    running_server,
    server_env,
)

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1  # seconds (GATEPASS_HEADER_TIMEOUT) on the shared server
#: How long a test waits for the server to drop an attacker before calling it a failure.
DROP_DEADLINE = HEADER_TIMEOUT + 8.0
DEFAULT_MAX_HEADER_BYTES = 32_768
ENV = {"GATEPASS_DEV": "1", "GATEPASS_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
MIB = 1024 * 1024


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module: default size limits, a 1 s header timeout."""
    with running_server(tmp_path_factory.mktemp("gatepass-limits"), ENV) as running:
        yield running


def connect(server: RunningServer, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bool, bytes]:
    """Read until the peer closes; ``(closed, received)``. ``closed`` is False at the deadline."""
    received = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body)


def read_response(sock: socket.socket, deadline: float) -> Response:
    """One Content-Length framed response (the server's own answers all are)."""
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
        assert time.monotonic() < deadline, f"no complete response in time: {raw!r}"
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {raw!r}"
        raw += chunk
    return parse_response(raw)


def _length(raw: bytes) -> int:
    if b"\r\n\r\n" not in raw:
        return 0
    return int(parse_response(raw).headers.get("content-length", "0"))


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def new_log(server: RunningServer, since: int) -> str:
    return server.logs()[since:]


# Huge heads


def test_eight_mib_cookie_is_refused_before_it_is_read(server: RunningServer) -> None:
    rss_before = vm_rss_kib(server.pid)
    sock = connect(server)
    # A small send buffer, so what "was sent" is close to what the server could read.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.sendall(b"GET /auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=")
    piece = b"b" * (64 * 1024)
    sent = 0
    with sock:
        try:
            while sent < 8 * MIB:
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)

    assert sent < 8 * MIB, "the server read the whole 8 MiB header"
    assert closed
    # Linux keeps what arrived before the reset readable: the answer is there.
    response = parse_response(received)
    assert response.status == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    assert json.loads(response.body)["status"] == 431
    assert vm_rss_kib(server.pid) - rss_before < 4 * 1024
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_header_block_just_over_the_cap_is_answered_431(server: RunningServer) -> None:
    # Many headers, each small: the cap is on the whole head, not on one line.
    fields = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(400))
    with connect(server) as sock:
        sock.sendall(b"GET /auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields)
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed
    response = parse_response(received)
    assert response.status == 431
    assert json.loads(response.body)["title"] == "Request Header Fields Too Large"


def test_nine_kib_bearer_token_within_the_default_cap_reaches_the_verifier(
    server: RunningServer,
) -> None:
    token = "x" * (9 * 1024)
    response = httpx.get(f"{server.url}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_body_beyond_the_header_cap_in_one_read_is_not_taken_for_a_head(
    server: RunningServer,
) -> None:
    body = json.dumps({"email": "a@example.com", "password": "p" * 40_000}).encode()
    assert len(body) > DEFAULT_MAX_HEADER_BYTES
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with connect(server) as sock:
        sock.sendall(head + body)
        response = read_response(sock, time.monotonic() + 30)
    # The application judged it (the password is over 1024 characters): not the head cap.
    assert response.status == 422, response
    assert response.headers["content-type"] == "application/problem+json"


def test_pipelined_requests_are_still_answered_in_order(server: RunningServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(request * 3)
        deadline = time.monotonic() + 10
        statuses = [read_response(sock, deadline).status for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_malformed_request_line_is_a_400_problem(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n")
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed
    response = parse_response(received)
    assert response.status == 400
    assert response.headers["content-type"] == "application/problem+json"


# Slow heads


def test_slow_loris_header_trickle_is_dropped(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        deadline = time.monotonic() + DROP_DEADLINE
        closed, received = False, b""
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, received = read_until_closed(sock, time.monotonic() + 0.3)
    assert closed, "the server kept a trickling client past the header timeout"
    if received:
        assert parse_response(received).status == 408


def test_connection_that_never_sends_a_byte_is_dropped(server: RunningServer) -> None:
    with connect(server) as sock:
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed, "the server kept a silent connection past the header timeout"
    assert received == b""


def test_keep_alive_connection_stalling_in_its_second_request_is_dropped(
    server: RunningServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock, time.monotonic() + 10).status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed, "the server kept a stalled keep-alive request past the header timeout"
    assert parse_response(received).status == 408


# Bodies


def test_endless_body_after_the_answer_does_not_keep_the_connection(
    server: RunningServer,
) -> None:
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (1024 * MIB)
    )
    with connect(server) as sock:
        sock.sendall(head)
        response = read_response(sock, time.monotonic() + 10)
        assert response.status == 413
        deadline = time.monotonic() + DROP_DEADLINE
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"x" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, _ = read_until_closed(sock, time.monotonic() + 0.2)
    assert closed, "the server kept reading a body it had already answered"


def test_endless_chunked_trailers_are_cut_off(server: RunningServer) -> None:
    rss_before = vm_rss_kib(server.pid)
    trailer = b"X-Trailer: " + b"t" * 1000 + b"\r\n"
    sent = 0
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
        )
        try:
            while sent < 8 * MIB:
                sock.sendall(trailer * 64)
                sent += len(trailer) * 64
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed, _ = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert sent < 8 * MIB, "the server read 8 MiB of trailers"
    assert closed
    assert vm_rss_kib(server.pid) - rss_before < 4 * 1024


def test_body_in_one_byte_chunks_is_still_read(server: RunningServer) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "x" * 2000}).encode()
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    with connect(server) as sock:
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        response = read_response(sock, time.monotonic() + 30)
    assert response.status == 401, response  # read whole and judged: no such account


def test_client_hanging_up_mid_body_is_no_error(server: RunningServer) -> None:
    since = len(server.logs())
    with connect(server) as sock:
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"email": "a@'
        )
        time.sleep(0.2)  # let the application start reading the body
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    logged = new_log(server, since)
    assert "Traceback" not in logged, logged
    assert not [line for line in logged.splitlines() if "ERROR" in line], logged


# Many connections


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"GATEPASS_DEV": "1", "GATEPASS_MAX_CONNECTIONS": "3", "GATEPASS_HEADER_TIMEOUT": "60"}
    with running_server(tmp_path_factory.mktemp("gatepass-capped"), env) as running:
        yield running


def _refused(server: RunningServer) -> bool:
    """Whether a fresh connection is closed by the server before any answer."""
    with connect(server) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return True
        closed, received = read_until_closed(sock, time.monotonic() + 5)
    return closed and received == b""


def test_connections_beyond_the_cap_are_refused_until_others_close(
    capped_server: RunningServer,
) -> None:
    held = [connect(capped_server) for _ in range(3)]
    try:
        for sock in held:  # each holds a half-sent request open
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _refused(capped_server)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{capped_server.url}/healthz")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            status = httpx.get(f"{capped_server.url}/healthz").status_code
            break
        except httpx.TransportError:
            # The server may not have seen every close yet.
            assert time.monotonic() < deadline, "the cap stayed reached after clients left"
            time.sleep(0.1)
    assert status == 200
    assert "GATEPASS_MAX_CONNECTIONS" in capped_server.logs()


# Stalls after the head, with the connection cap reached


TIGHT_TIMEOUT = 1  # seconds (GATEPASS_HEADER_TIMEOUT) on the tight server
TIGHT_HEAD_BYTES = 192  # bytes (GATEPASS_MAX_HEADER_BYTES): room for httpx's own head
#: How long after the timeout a stalled client may still hold its connection.
STALL_DEADLINE = TIGHT_TIMEOUT + 3.0


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Three connections, 1 s timeout, heads of at most 192 bytes."""
    env = {
        "GATEPASS_DEV": "1",
        "GATEPASS_MAX_CONNECTIONS": "3",
        "GATEPASS_HEADER_TIMEOUT": str(TIGHT_TIMEOUT),
        "GATEPASS_MAX_HEADER_BYTES": str(TIGHT_HEAD_BYTES),
    }
    with running_server(tmp_path_factory.mktemp("gatepass-tight"), env) as running:
        yield running


def served_by(server: RunningServer, deadline: float) -> bool:
    """Whether a new client gets ``/healthz`` answered before ``deadline``."""
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass  # refused over the cap (or the server has not seen a close yet)
        time.sleep(0.05)
    return False


def test_slow_bodies_holding_every_connection_are_dropped(tight_server: RunningServer) -> None:
    assert served_by(tight_server, time.monotonic() + 10)  # earlier tests' connections are gone
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    held = [connect(tight_server) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(head)
        deadline = time.monotonic() + STALL_DEADLINE
        outcomes = [read_until_closed(sock, deadline) for sock in held]
        assert served_by(tight_server, deadline), "slow bodies kept every connection"
    finally:
        for sock in held:
            sock.close()
    for closed, received in outcomes:
        assert closed, "a stalled body kept its connection past the timeout"
        response = parse_response(received)
        assert response.status == 408
        assert response.headers["content-type"] == "application/problem+json"


def test_clients_that_never_read_their_answers_are_dropped(tight_server: RunningServer) -> None:
    assert served_by(tight_server, time.monotonic() + 10)
    burst = b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n" * 3000
    held = []
    try:
        for _ in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A small window, so the answers pile up on the server's side.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5.0)
            sock.connect(("127.0.0.1", tight_server.port))
            held.append(sock)
            sock.sendall(burst)
        # The server needs a moment to write answers until the client's window is full.
        deadline = time.monotonic() + STALL_DEADLINE + 2.0
        assert served_by(tight_server, deadline), "clients that never read kept every connection"
        for sock in held:
            closed, _ = read_until_closed(sock, time.monotonic() + 5)
            assert closed, "the server kept a connection whose answers were never read"
    finally:
        for sock in held:
            sock.close()


def test_slow_but_steady_upload_is_still_read(server: RunningServer) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "correct horse"}).encode()
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    trickled = 12  # bytes, one every 0.3 s: 3.6 s in all, over three timeouts
    with connect(server) as sock:
        sock.sendall(head + body[:-trickled])
        for i in range(len(body) - trickled, len(body)):
            time.sleep(0.3)
            sock.sendall(body[i : i + 1])
        response = read_response(sock, time.monotonic() + 30)
    assert response.status == 401, response  # read whole and judged: no such account


# Answers before the body is read


def test_early_answer_to_an_unread_body_closes_the_connection(server: RunningServer) -> None:
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (1024 * MIB)
    )
    with connect(server) as sock:
        sock.sendall(head + b'{"email": ')
        response = read_response(sock, time.monotonic() + 10)
        # The rest of the body, if sent, would be taken for a request: the client
        # is told the connection ends with this answer, and it does.
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert json.loads(response.body)["status"] == 413
        closed, rest = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed
    assert rest == b""


def test_body_completed_before_the_answer_keeps_the_connection(server: RunningServer) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "correct horse"}).encode()
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with connect(server) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.2)
        sock.sendall(body[10:])
        first = read_response(sock, time.monotonic() + 30)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        second = read_response(sock, time.monotonic() + 10)
    assert first.status == 401
    assert "connection" not in first.headers
    assert second.status == 200


# Chunked bodies


def test_one_byte_chunks_then_a_trailer_flood_is_cut_off(server: RunningServer) -> None:
    rss_before = vm_rss_kib(server.pid)
    chunks = b"1\r\nx\r\n" * 60_000
    trailers = b"a:b\r\n" * 120_000
    sent = 0
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n"
        )
        try:
            for start in range(0, len(trailers), 60_000):
                sock.sendall(trailers[start : start + 60_000])
                sent += 60_000
                time.sleep(0.002)
            sock.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
        rss_growth = vm_rss_kib(server.pid) - rss_before
    assert closed
    assert received == b"", "the request was answered: its trailers were taken"
    assert rss_growth < 4 * 1024, f"{rss_growth} KiB held for trailers"
    assert "GATEPASS_MAX_HEADER_BYTES" in server.logs()


# Pipelined requests


def test_pipelined_burst_with_a_small_head_cap_is_answered(tight_server: RunningServer) -> None:
    # Reads reach 256 KB once the kernel has grown the receive buffer; each holds
    # over a thousand cap-sized pieces of pipelined requests.
    since = len(tight_server.logs())
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 120 + b"\r\n\r\n"
    assert len(request) < TIGHT_HEAD_BYTES
    count = 2 * MIB // len(request)
    assert served_by(tight_server, time.monotonic() + 10)
    with connect(tight_server, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
        # Sent from a thread while this one reads: a client that stops reading
        # would (rightly) be dropped.
        sender = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        answered = 0
        tail = b""
        while answered < count:
            assert time.monotonic() < deadline, f"{answered} of {count} answered in time"
            try:
                chunk = sock.recv(1024 * 1024)
            except ConnectionResetError:
                chunk = b""
            assert chunk, f"closed after {answered} of {count} answers"
            window = tail + chunk
            answered += window.count(b"HTTP/1.1 200 ")
            tail = window[-12:]
        sender.join(timeout=30)
    logged = new_log(tight_server, since)
    assert "Traceback" not in logged, logged[-3000:]


def test_oversized_head_pipelined_behind_a_request_is_answered_431(
    tight_server: RunningServer,
) -> None:
    assert served_by(tight_server, time.monotonic() + 10)
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    padding = b"X-Pad: " + b"p" * (TIGHT_HEAD_BYTES - 30)
    with connect(tight_server) as sock:
        # The second head starts in the read that ends the first request, and
        # outgrows the cap in the next read.
        sock.sendall(first + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + padding[:100])
        assert read_response(sock, time.monotonic() + 10).status == 200
        sock.sendall(padding[100:] + b"\r\nX-More: " + b"m" * 50)
        closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
    assert closed
    assert parse_response(received).status == 431


def test_partial_head_pipelined_behind_a_request_is_timed_out(
    tight_server: RunningServer,
) -> None:
    assert served_by(tight_server, time.monotonic() + 10)
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(tight_server) as sock:
        sock.sendall(first + b"GET /healthz HTTP/1.1\r\nHo")
        assert read_response(sock, time.monotonic() + 10).status == 200
        closed, received = read_until_closed(sock, time.monotonic() + STALL_DEADLINE)
    assert closed, "the pipelined head got no deadline"
    assert parse_response(received).status == 408


def test_flood_of_oversized_heads_logs_a_few_lines(tight_server: RunningServer) -> None:
    assert served_by(tight_server, time.monotonic() + 10)
    since = len(tight_server.logs())
    for _ in range(6):
        with connect(tight_server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * TIGHT_HEAD_BYTES)
            closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
        assert closed
        assert parse_response(received).status == 431
    warnings = [
        line
        for line in new_log(tight_server, since).splitlines()
        if "GATEPASS_MAX_HEADER_BYTES" in line
    ]
    assert len(warnings) <= 1, warnings


# Workers and settings


def test_every_worker_refuses_oversized_heads_and_slow_clients(tmp_path: Path) -> None:
    env = {**ENV, "GATEPASS_MAX_HEADER_BYTES": "1024"}
    # Workers starting on a database that does not exist yet race to create its
    # tables; create them first (that race is not what this test is about).
    subprocess.run(
        [*gatepass_command(), "keys", "list"],
        cwd=tmp_path,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=True,
    )
    with running_server(tmp_path, env, args=("--workers", "2")) as running:
        statuses = []
        for _ in range(6):
            with connect(running) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2048)
                closed, received = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
            assert closed
            statuses.append(parse_response(received).status)
        assert statuses == [431] * 6
        with connect(running) as sock:
            closed, _ = read_until_closed(sock, time.monotonic() + DROP_DEADLINE)
        assert closed
        assert httpx.get(f"{running.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEPASS_MAX_HEADER_BYTES", "0"),
        ("GATEPASS_HEADER_TIMEOUT", "soon"),
        ("GATEPASS_MAX_CONNECTIONS", "-1"),
    ],
)
def test_invalid_http_limit_stops_serve_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    result = run_serve_expecting_exit(tmp_path, {name: value})
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gatepass: {name}:")
