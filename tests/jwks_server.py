"""A real HTTP server on loopback that serves a JWKS the test controls and counts requests.

It runs :class:`http.server.ThreadingHTTPServer` in a daemon thread; the test sets
what it answers (status, body, headers, a delay, chunked transfer) and reads how
many requests arrived and with which headers. It is stopped by the context manager.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"keys": []}'
    headers: dict[str, str] = field(default_factory=lambda: {"Cache-Control": "max-age=300"})
    delay: float = 0.0
    chunked: bool = False


class JwksServer:
    """What one loopback server answers, and what it was asked."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def serve(self, jwks: dict[str, Any], *, max_age: int | None = 300, **answer: Any) -> None:
        headers = {"Content-Type": "application/json"}
        if max_age is not None:
            headers["Cache-Control"] = f"public, max-age={max_age}"
        self.answer = Answer(body=json.dumps(jwks).encode(), headers=headers, **answer)

    def serve_raw(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, **answer: Any
    ) -> None:
        self.answer = Answer(status=status, body=body, headers=headers or {}, **answer)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append({k.lower(): v for k, v in handler.headers.items()})
            self.paths.append(handler.path)
        answer = self.answer
        if answer.delay:
            time.sleep(answer.delay)
        handler.send_response(answer.status)
        # One request per connection: a stopped server must refuse the next one.
        handler.send_header("Connection", "close")
        handler.close_connection = True
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if answer.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            step = 4096
            for start in range(0, len(answer.body), step):
                chunk = answer.body[start : start + step]
                handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            handler.wfile.write(answer.body)

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):
                    owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)
