"""What the Flask adapter adds to a Flask request: CPU µs per request, measured by
calling the WSGI app directly (no server, no socket), against the same app without
authentication, in interleaved rounds.

Usage: python bench/adapters_flask.py [--quick] [--mode resource|embedded|both]

* ``bare_app()``: Flask, one GET route answering small JSON.
* ``gatepass_app(...)``: the same route behind ``login_required``, called with a
  Bearer token that was already verified once (the steady state of a client that
  calls again and again). ``resource`` mode verifies it through
  :class:`gatepass.verifier.Verifier` against a running ``gatepass serve`` (no
  network call per request: JWKS cached, revocations from the feed);
  ``embedded`` mode through the app's own :class:`~gatepass.core.Gatepass`, which
  costs one hand-over to the process's gatepass loop thread per request.

CPU time is the whole process's (``time.process_time``), so the loop thread's
share of an embedded request is counted too. Figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, jsonify

from gatepass.config import Settings, load_settings
from gatepass.integrations.flask import (
    FlaskGatepass,
    TokenVerifier,
    current_identity,
    gatepass_blueprint,
    login_required,
)

PASSWORD = "correct horse battery"
WsgiCall = Callable[[], None]


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/hello")
    def hello() -> Any:
        return jsonify(hello="world")

    return app


def gatepass_app(settings: Settings) -> Flask:
    """For bench/run.py: the bare app's route behind ``login_required``, embedded,
    on ``settings`` (those of the ``gatepass serve`` whose token it is shown)."""
    app, _ = gatepass_app_with(settings=settings)
    return app


def gatepass_app_with(
    *,
    verifier: TokenVerifier | None = None,
    data_dir: Path | None = None,
    settings: Settings | None = None,
) -> tuple[Flask, FlaskGatepass]:
    """The bare app's route behind ``login_required``: resource-server mode with
    ``verifier``, else embedded mode on ``settings`` or SQLite in ``data_dir``."""
    app = Flask("gatepass")
    if verifier is not None:
        ext = FlaskGatepass(verifier=verifier)
    else:
        if settings is None:
            assert data_dir is not None
            settings = load_settings(
                {"GATEPASS_DEV": "1", "GATEPASS_PUBLIC_URL": "http://localhost"},
                data_dir=data_dir,
            )
        ext = FlaskGatepass(settings=settings)
    ext.init_app(app)
    if verifier is None:
        app.register_blueprint(gatepass_blueprint())

    @app.get("/hello")
    @login_required
    def hello() -> Any:
        return jsonify(hello=current_identity.user_id)

    return app, ext


def wsgi_call(app: Flask, path: str, headers: dict[str, str]) -> WsgiCall:
    """One GET through ``app.wsgi_app``; the environ is built once, copied per call."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in headers.items():
        environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
    wsgi = app.wsgi_app
    status: list[str] = []

    def start_response(line: str, _headers: list[tuple[str, str]], *_: Any) -> Any:
        status.append(line)

    def call() -> None:
        status.clear()
        body = wsgi(dict(environ), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not status[0].startswith("200"):
            raise RuntimeError(f"{path} answered {status[0]}")

    return call


def check(app: Flask, path: str, good: dict[str, str], forged: dict[str, str]) -> None:
    """The protected route must answer 200 with the credential, 401 without one
    and with a forged one, before anything is measured."""
    client = app.test_client()
    assert client.get(path, headers=good).status_code == 200
    assert client.get(path).status_code == 401
    assert client.get(path, headers=forged).status_code == 401


def forge(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


def cpu_us(call: WsgiCall, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - start) / n * 1e6


def measure(calls: dict[str, WsgiCall], n: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs per request of each call in each round. Rounds are short and
    interleaved, their order reversed every other round, so a slow drift of the
    machine's load weighs on every configuration alike."""
    for call in calls.values():  # warm-up
        cpu_us(call, max(100, n // 10))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            samples[name].append(cpu_us(calls[name], n))
    return samples


def _token_from(app: Flask) -> str:
    client = app.test_client()
    account = {"email": "bench@example.com", "password": PASSWORD}
    assert client.post("/auth/register", json=account).status_code == 201
    answer = client.post("/auth/login", json={**account, "client": "api"})
    return str(json.loads(answer.get_data())["access_token"])


@contextmanager
def embedded_row(folder: Path) -> Iterator[WsgiCall]:
    app, ext = gatepass_app_with(data_dir=folder / "embedded")
    try:
        token = _token_from(app)
        check(app, "/hello", _bearer(token), _bearer(forge(token)))
        yield wsgi_call(app, "/hello", _bearer(token))
    finally:
        ext.close(app)


@contextmanager
def resource_row(folder: Path) -> Iterator[WsgiCall]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import httpx
    from tests.e2e_support import running_server

    from gatepass.verifier import Verifier

    with running_server(folder / "issuer") as server:
        account = {"email": "bench@example.com", "password": PASSWORD}
        with httpx.Client(base_url=server.url) as client:
            assert client.post("/auth/register", json=account).status_code == 201
            answer = client.post("/auth/login", json={**account, "client": "api"})
            token = str(answer.json()["access_token"])
        with Verifier(server.url, audience="gatepass") as verifier:
            app, _ = gatepass_app_with(verifier=verifier)
            check(app, "/hello", _bearer(token), _bearer(forge(token)))
            yield wsgi_call(app, "/hello", _bearer(token))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def report(samples: dict[str, list[float]], rows: Iterable[str]) -> None:
    """Median CPU µs per request, and the added cost: the median over rounds of the
    difference to bare Flask measured in the same round."""
    bare = samples["bare Flask"]
    print(f"{'configuration':<34}{'CPU µs/req':>12}{'added µs':>10}")
    print(f"{'bare Flask':<34}{statistics.median(bare):>12.1f}{'':>10}")
    for name in rows:
        added = statistics.median(a - b for a, b in zip(samples[name], bare, strict=True))
        print(f"{name:<34}{statistics.median(samples[name]):>12.1f}{added:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--mode", choices=["resource", "embedded", "both"], default="both")
    args = parser.parse_args()
    n, rounds = (300, 5) if args.quick else (1000, 31)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        calls: dict[str, WsgiCall] = {"bare Flask": wsgi_call(bare_app(), "/hello", {})}
        if args.mode in ("resource", "both"):
            calls["gatepass, resource server"] = stack.enter_context(resource_row(folder))
        if args.mode in ("embedded", "both"):
            calls["gatepass, embedded"] = stack.enter_context(embedded_row(folder))
        samples = measure(calls, n, rounds)
    print(f"{n} requests x {rounds} interleaved rounds; medians of CPU per request")
    report(samples, [name for name in calls if name != "bare Flask"])


if __name__ == "__main__":
    main()
