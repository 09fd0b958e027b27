"""The resource-server verifier against PyJWT + ``PyJWKClient``: µs per verify, and
network requests at steady state.

Usage: .venv/bin/python bench/verifier.py [--quick] [--rounds N] [--iterations N]

Both sides fetch the same JWKS from one loopback HTTP server (started here, stopped
at the end) that counts requests, and verify the same tokens with the same issuer,
audience and leeway:

- gatepass: ``Verifier.verify(token)``;
- peer: ``PyJWKClient.get_signing_key_from_jwt(token)`` then ``jwt.decode(...)``.

Rows: *same token* (one token presented again and again, as a client does for the
token's lifetime: gatepass's verified-token cache answers) and *distinct tokens*
(each presented once: parse, header, signature and claims every time). Rounds are
interleaved (gatepass, peer, gatepass, peer ...) and the median per round is
shown. Requests are counted after one warm-up verify per side; at steady state
gatepass must make none.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWKClient

from gatepass.verifier import Verifier

ISSUER = "http://127.0.0.1"
AUDIENCE = "gatepass"
LEEWAY = 10
ALGORITHMS = ("EdDSA", "ES256", "RS256")


class CountingJwksServer:
    """Serves one JWKS document on loopback and counts the requests it gets."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.body = json.dumps(document).encode()
        self.requests = 0
        self._lock = threading.Lock()

    @contextmanager
    def running(self) -> Iterator[str]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)


def signing_key(alg: str) -> Any:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(alg: str, private: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.get_default_algorithms()[alg]
    return {
        **algorithm.to_jwk(private.public_key(), as_dict=True),
        "kid": kid,
        "alg": alg,
        "use": "sig",
    }


def make_tokens(alg: str, private: Any, kid: str, count: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "user-1",
                "iat": now,
                "exp": now + 900,
                "jti": secrets.token_urlsafe(16),
                "sid": "family-1",
                "roles": ["user"],
            },
            private,
            algorithm=alg,
            headers={"kid": kid, "typ": "at+jwt"},
        )
        for _ in range(count)
    ]


def per_call_us(verify: Callable[[str], object], tokens: Sequence[str]) -> float:
    start = time.perf_counter_ns()
    for token in tokens:
        verify(token)
    return (time.perf_counter_ns() - start) / len(tokens) / 1000


Row = tuple[str, float, float, int, int]


def interleaved(
    sides: dict[str, Callable[[str], object]],
    tokens: Callable[[], Sequence[str]],
    rounds: int,
    server: CountingJwksServer,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """µs per verify per side and round, and the JWKS requests each side made meanwhile."""
    timings: dict[str, list[float]] = {name: [] for name in sides}
    requests = dict.fromkeys(sides, 0)
    for _ in range(rounds):
        batch = tokens()
        for name, verify in sides.items():
            before = server.requests
            timings[name].append(per_call_us(verify, batch))
            requests[name] += server.requests - before
    return timings, requests


def bench_algorithm(alg: str, rounds: int, iterations: int) -> list[Row]:
    private = signing_key(alg)
    kid = secrets.token_urlsafe(12)
    server = CountingJwksServer({"keys": [public_jwk(alg, private, kid)]})
    rows: list[Row] = []
    with server.running() as url:
        verifier = Verifier(ISSUER, audience=AUDIENCE, jwks_url=url, leeway=LEEWAY)
        client = PyJWKClient(url)

        def gatepass_verify(token: str) -> object:
            return verifier.verify(token)

        def peer_verify(token: str) -> object:
            key = client.get_signing_key_from_jwt(token)
            return jwt.decode(
                token, key.key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY
            )

        # Warm-up: each side fetches the JWKS once, then holds it.
        (warm,) = make_tokens(alg, private, kid, 1)
        gatepass_verify(warm)
        peer_verify(warm)
        assert server.requests == 2, "each side fetches the JWKS once"

        sides = {"gatepass": gatepass_verify, "peer": peer_verify}
        same = make_tokens(alg, private, kid, 1) * iterations
        distinct = max(iterations // 10, 200)
        for label, tokens in (
            ("same token", lambda: same),
            ("distinct tokens", lambda: make_tokens(alg, private, kid, distinct)),
        ):
            timings, requests = interleaved(sides, tokens, rounds, server)
            rows.append(
                (
                    f"{alg} {label}",
                    statistics.median(timings["gatepass"]),
                    statistics.median(timings["peer"]),
                    requests["gatepass"],
                    requests["peer"],
                )
            )
        verifier.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000 verifies")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    rounds, iterations = (3, 2_000) if args.quick else (args.rounds, args.iterations)
    print(
        f"# verifier vs PyJWT {jwt.__version__} + PyJWKClient: median µs per verify over "
        f"{rounds} interleaved rounds ({iterations} same-token verifies per round)"
    )
    print(
        f"{'row':<24} {'gatepass µs':>12} {'PyJWT µs':>10} {'ratio':>7} "
        f"{'requests gatepass/peer':>24}"
    )
    for alg in ALGORITHMS:
        for label, gp, peer, gp_requests, peer_requests in bench_algorithm(alg, rounds, iterations):
            print(
                f"{label:<24} {gp:>12.2f} {peer:>10.2f} {gp / peer:>6.2f}x "
                f"{gp_requests:>13}/{peer_requests}"
            )
    print("# requests: JWKS fetches during the timed rounds, after one warm-up verify per side")


if __name__ == "__main__":
    main()
