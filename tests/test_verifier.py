"""The resource-server verifier over a real JWKS server on loopback: caching within the
issuer's ``Cache-Control``, one fetch at a time, the unknown-``kid`` cooldown, the last
good keys through fetch errors up to the stale limit, and the attacks a verifier that
fetches keys must refuse. The rotation test runs the real ``gatepass serve``."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import json
import logging
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gatepass.errors import (
    AuthenticationFailed,
    InvalidToken,
    KeysUnavailable,
    RevocationsStale,
    StoreUnavailable,
    UnknownSigningKey,
)
from gatepass.tokens import AccessClaims
from gatepass.verifier import AsyncVerifier, VerifiedToken, Verifier
from gatepass.verifier.jwks import (
    DEFAULT_CACHE_SECONDS,
    DEFAULT_COOLDOWN,
    DEFAULT_STALE_LIMIT,
    MAX_CACHE_SECONDS,
    MAX_JWKS_BYTES,
    MIN_CACHE_SECONDS,
    cache_seconds,
    check_jwks_url,
)
from tests.conftest import PASSWORD, FakeClock
from tests.e2e_support import free_port, gatepass_command, running_server, server_env
from tests.jwks_server import JwksServer

ISSUER = "https://auth.example.test"
AUDIENCE = "gatepass"
START = 1_800_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Key:
    """An Ed25519 signing key and its public JWK."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or secrets.token_urlsafe(12)
        self.private = ed25519.Ed25519PrivateKey.generate()
        self.jwk: dict[str, Any] = {
            **jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def token(self, now: float = START, **overrides: Any) -> str:
        headers = overrides.pop("headers", {"kid": self.kid, "typ": "at+jwt"})
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": int(now),
            "exp": int(now) + 900,
            "jti": secrets.token_urlsafe(16),
            "sid": "family-1",
            "roles": ["user"],
            **overrides,
        }
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers=headers)


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.jwk for key in keys]}


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer().running() as running:
        yield running


@pytest.fixture
def key(server: JwksServer) -> Key:
    signing = Key()
    server.serve(jwks(signing))
    return signing


def make_verifier(server: JwksServer, clock: FakeClock, **options: Any) -> Verifier:
    return Verifier(ISSUER, audience=AUDIENCE, jwks_url=server.jwks_url, clock=clock, **options)


@pytest.fixture
def verifier(server: JwksServer, clock: FakeClock) -> Iterator[Verifier]:
    with make_verifier(server, clock) as made:
        yield made


# verification -------------------------------------------------------------------------


def test_token_signed_by_a_published_key_verifies(
    key: Key, server: JwksServer, verifier: Verifier
) -> None:
    token = key.token(roles=["user", "admin"])
    verified = verifier.verify(token)
    assert verified == VerifiedToken(
        user_id="user-1",
        roles=("user", "admin"),
        token_id=jwt.decode(token, options={"verify_signature": False})["jti"],
        family_id="family-1",
        issued_at=START,
        expires_at=START + 900,
    )
    assert verified.method == "bearer"
    assert server.count == 1
    assert server.paths == ["/.well-known/jwks.json"]


def test_jwks_url_defaults_to_the_issuers_well_known_path(server: JwksServer) -> None:
    issuer = server.url + "/"
    key = Key()
    server.serve(jwks(key))
    token = key.token(iss=issuer)
    with Verifier(issuer, audience=AUDIENCE, clock=FakeClock()) as verifier:
        assert verifier.verify(token).user_id == "user-1"
    assert server.paths == ["/.well-known/jwks.json"]


def test_verify_authorization_reads_a_bearer_header(key: Key, verifier: Verifier) -> None:
    token = key.token()
    assert verifier.verify_authorization(f"Bearer {token}").user_id == "user-1"
    assert verifier.verify_authorization(f"bearer   {token} ").user_id == "user-1"
    with pytest.raises(AuthenticationFailed) as missing:
        verifier.verify_authorization(None)
    assert not missing.value.token_sent
    for header in (f"Basic {token}", "Bearer ", "Bearer", token):
        with pytest.raises(AuthenticationFailed) as refused:
            verifier.verify_authorization(header)
        assert refused.value.token_sent


def test_expired_token_is_refused_after_the_leeway(
    key: Key, verifier: Verifier, clock: FakeClock
) -> None:
    token = key.token()
    clock.advance(900 + 9)
    assert verifier.verify(token).user_id == "user-1"  # within the 10 s leeway
    clock.advance(2)
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_token_from_the_future_is_refused(key: Key, verifier: Verifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(key.token(now=START + 60))


# Cache-Control and the refresh ahead of expiry ----------------------------------------


def test_cache_lifetime_is_max_age_clamped_to_its_bounds() -> None:
    bounds = {"lower": MIN_CACHE_SECONDS, "upper": MAX_CACHE_SECONDS}
    assert (MIN_CACHE_SECONDS, MAX_CACHE_SECONDS) == (30.0, 3600.0)
    assert cache_seconds("public, max-age=120", **bounds) == 120
    assert cache_seconds("max-age=1", **bounds) == MIN_CACHE_SECONDS
    assert cache_seconds("max-age=0", **bounds) == MIN_CACHE_SECONDS
    assert cache_seconds("max-age=99999999", **bounds) == MAX_CACHE_SECONDS
    assert cache_seconds('max-age="600"', **bounds) == 600
    assert cache_seconds(None, **bounds) == DEFAULT_CACHE_SECONDS
    assert cache_seconds("public", **bounds) == DEFAULT_CACHE_SECONDS
    assert cache_seconds("no-store", **bounds) == MIN_CACHE_SECONDS
    assert cache_seconds("max-age=-5", **bounds) == DEFAULT_CACHE_SECONDS
    assert cache_seconds("s-max-age=10", **bounds) == DEFAULT_CACHE_SECONDS


def test_keys_are_fetched_again_ahead_of_their_max_age(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    key = Key()
    server.serve(jwks(key), max_age=100)
    verifier.verify(key.token())
    clock.advance(79)  # 80 % of the lifetime: still fresh
    verifier.verify(key.token())
    assert server.count == 1
    clock.advance(2)
    verifier.verify(key.token())
    assert server.count == 2
    clock.advance(79)
    verifier.verify(key.token())
    assert server.count == 2


def test_a_tiny_max_age_cannot_make_the_verifier_poll(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    key = Key()
    server.serve(jwks(key), max_age=0)
    for _ in range(20):
        verifier.verify(key.token())
        clock.advance(1)
    assert server.count == 1  # the lower bound, 30 s, holds


def test_a_huge_max_age_is_cut_to_the_upper_bound(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    key = Key()
    server.serve(jwks(key), max_age=10**9)
    verifier.verify(key.token())
    clock.advance(MAX_CACHE_SECONDS)
    verifier.verify(key.token(now=clock.now))
    assert server.count == 2


def test_due_refresh_is_one_request_while_other_threads_keep_verifying(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    key = Key()
    server.serve(jwks(key), max_age=100)
    verifier.verify(key.token())
    clock.advance(90)
    server.serve(jwks(key), max_age=100, delay=0.3)  # a slow fetch, so the others overlap
    tokens = [key.token(now=clock.now) for _ in range(32)]
    barrier = threading.Barrier(len(tokens))
    results: list[VerifiedToken | BaseException] = []

    def verify(token: str) -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(token))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=verify, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(isinstance(result, VerifiedToken) for result in results), results
    assert len(results) == len(tokens)
    assert server.count == 2


def test_first_use_from_many_tasks_is_one_request(server: JwksServer, clock: FakeClock) -> None:
    key = Key()
    server.serve(jwks(key), delay=0.2)
    tokens = [key.token() for _ in range(50)]

    async def main() -> list[VerifiedToken]:
        async with AsyncVerifier(
            ISSUER, audience=AUDIENCE, jwks_url=server.jwks_url, clock=clock
        ) as verifier:
            return await asyncio.gather(*(verifier.verify(token) for token in tokens))

    verified = asyncio.run(main())
    assert [v.user_id for v in verified] == ["user-1"] * len(tokens)
    assert server.count == 1


def test_many_threads_verify_while_keys_refresh_and_rotate(
    server: JwksServer, clock: FakeClock
) -> None:
    """Keys rotate at the issuer while 8 threads verify and the clock runs: every
    token of a published key verifies, and fetches stay bounded by the lifetime."""
    stable, first, second = Key(), Key(), Key()
    server.serve(jwks(stable, first), max_age=30)
    verifier = make_verifier(server, clock)
    errors: list[BaseException] = []
    done = threading.Event()
    far = {"exp": int(START) + 10**6}

    verified = [0] * 8

    def verify_stable(me: int) -> None:
        try:
            while not done.is_set() or verified[me] < 50:
                assert verifier.verify(stable.token(**far)).user_id == "user-1"
                verified[me] += 1
        except BaseException as exc:
            errors.append(exc)

    def rotate_and_tick() -> None:
        for step in range(300):
            clock.advance(1)
            if step == 100:
                server.serve(jwks(stable, first, second), max_age=30)
            if step == 200:
                server.serve(jwks(stable, second), max_age=30)
            time.sleep(0.001)
        done.set()

    threads = [threading.Thread(target=verify_stable, args=(me,)) for me in range(8)]
    ticker = threading.Thread(target=rotate_and_tick)
    for thread in [*threads, ticker]:
        thread.start()
    for thread in [*threads, ticker]:
        thread.join(timeout=60)
    assert done.is_set()
    assert errors == []
    # 300 s of clock at a 30 s lifetime (refreshed at 24 s): about 13 fetches, never
    # one per verification.
    assert 2 <= server.count <= 300 / 24 + 2
    verifier.verify(second.token(now=clock.now))
    with pytest.raises(InvalidToken):
        verifier.verify(first.token(now=clock.now))  # no longer published
    verifier.close()


# the unknown-kid cooldown ---------------------------------------------------------------


def test_flood_of_random_kids_costs_one_fetch_per_cooldown(
    key: Key, server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    verifier.verify(key.token())
    assert server.count == 1
    attacker = Key()
    refused = 0
    for _ in range(1000):
        forged = attacker.token(
            now=clock.now, headers={"kid": secrets.token_urlsafe(12), "typ": "at+jwt"}
        )
        with pytest.raises(InvalidToken):
            verifier.verify(forged)
        refused += 1
        clock.advance(0.05)  # 1,000 tokens over 50 s
    assert refused == 1000
    # One fetch per 10 s cooldown at most: 50 s -> at most 5 more than the first.
    assert DEFAULT_COOLDOWN == 10.0
    assert server.count - 1 <= 50 / DEFAULT_COOLDOWN


def test_flood_of_random_kids_from_many_threads_is_one_fetch(
    key: Key, server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    verifier.verify(key.token())
    clock.advance(DEFAULT_COOLDOWN)  # one fetch is allowed again; the flood gets that one
    attacker = Key()
    forged = [
        attacker.token(headers={"kid": secrets.token_urlsafe(12), "typ": "at+jwt"})
        for _ in range(1000)
    ]
    statuses: list[str] = []
    lock = threading.Lock()

    def flood(chunk: list[str]) -> None:
        for token in chunk:
            try:
                verifier.verify(token)
                outcome = "accepted"
            except InvalidToken:
                outcome = "401"
            with lock:
                statuses.append(outcome)

    threads = [threading.Thread(target=flood, args=(forged[i::10],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == ["401"] * 1000
    assert server.count == 2


def test_flood_of_random_kids_on_the_async_verifier_is_one_fetch_per_cooldown(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    attacker = Key()

    async def main() -> list[BaseException | VerifiedToken]:
        async with AsyncVerifier(
            ISSUER, audience=AUDIENCE, jwks_url=server.jwks_url, clock=clock
        ) as verifier:
            await verifier.verify(key.token())
            outcomes: list[BaseException | VerifiedToken] = []
            for _ in range(20):
                batch = [
                    attacker.token(
                        now=clock.now, headers={"kid": secrets.token_urlsafe(9), "typ": "at+jwt"}
                    )
                    for _ in range(50)
                ]
                outcomes += await asyncio.gather(
                    *(verifier.verify(token) for token in batch), return_exceptions=True
                )
                clock.advance(1)
            return outcomes

    outcomes = asyncio.run(main())
    assert len(outcomes) == 1000
    assert all(isinstance(outcome, InvalidToken) for outcome in outcomes)
    assert server.count - 1 <= 20 / DEFAULT_COOLDOWN


def test_unknown_kid_fetches_and_verifies_a_key_the_issuer_just_added(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    old, new = Key(), Key()
    server.serve(jwks(old))
    verifier.verify(old.token())
    clock.advance(DEFAULT_COOLDOWN)
    server.serve(jwks(old, new))
    assert verifier.verify(new.token(now=clock.now)).user_id == "user-1"
    assert server.count == 2


def test_unknown_kid_within_the_cooldown_is_refused_without_a_fetch(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    old, new = Key(), Key()
    server.serve(jwks(old))
    verifier.verify(old.token())
    server.serve(jwks(old, new))
    with pytest.raises(UnknownSigningKey):
        verifier.verify(new.token())
    assert server.count == 1
    clock.advance(DEFAULT_COOLDOWN)
    assert verifier.verify(new.token(now=clock.now)).user_id == "user-1"


def test_key_removed_by_the_issuer_stops_verifying_its_cached_tokens(
    server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    leaked, fresh = Key(), Key()
    server.serve(jwks(leaked, fresh), max_age=60)
    token = leaked.token(exp=int(START) + 3600)
    verifier.verify(token)
    server.serve(jwks(fresh), max_age=60)
    clock.advance(60)
    with pytest.raises(InvalidToken):
        verifier.verify(token)


# fetch errors and the stale limit ---------------------------------------------------------


FAILURES = {
    "server_error": lambda server: server.serve_raw(503, b"upstream down"),
    "not_json": lambda server: server.serve_raw(200, b"<html>maintenance</html>"),
    "not_a_jwks": lambda server: server.serve_raw(200, b'{"keys": {"a": 1}}'),
    "oversized": lambda server: server.serve_raw(200, b" " * (MAX_JWKS_BYTES + 1)),
    "redirect": lambda server: server.serve_raw(302, b"", headers={"Location": "/elsewhere"}),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_last_good_keys_serve_through_fetch_errors_until_the_stale_limit(
    failure: str, server: JwksServer, verifier: Verifier, clock: FakeClock
) -> None:
    key = Key()
    server.serve(jwks(key), max_age=60)
    far = {"exp": int(START) + 10**5}
    verifier.verify(key.token(**far))
    FAILURES[failure](server)
    clock.advance(60 + DEFAULT_STALE_LIMIT - 1)  # expired, but within the stale limit
    assert verifier.verify(key.token(now=clock.now, **far)).user_id == "user-1"
    assert server.count == 2
    clock.advance(2)
    token = key.token(now=clock.now, **far)
    with pytest.raises(KeysUnavailable) as exc_info:
        verifier.verify(token)
    assert isinstance(exc_info.value, StoreUnavailable)
    # The issuer is back: the next fetch (after the cooldown) restores service.
    server.serve(jwks(key), max_age=60)
    with pytest.raises(KeysUnavailable):
        verifier.verify(token)  # still within the cooldown: no hammering
    clock.advance(DEFAULT_COOLDOWN)
    assert verifier.verify(token).user_id == "user-1"


def test_connection_refused_keeps_the_last_good_keys_then_fails_closed(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    key = Key()
    with JwksServer().running() as server:
        server.serve(jwks(key), max_age=60)
        verifier = make_verifier(server, clock)
        verifier.verify(key.token())
    # The server is gone: its port refuses connections.
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="gatepass.verifier"):
        assert verifier.verify(key.token(now=clock.now)).user_id == "user-1"
    assert "ConnectError" in caplog.text
    assert "keeping the last good key set" in caplog.text
    clock.advance(DEFAULT_STALE_LIMIT)
    with pytest.raises(KeysUnavailable):
        verifier.verify(key.token(now=clock.now))
    verifier.close()


def test_no_reachable_jwks_fails_closed_from_the_start(clock: FakeClock) -> None:
    key = Key()
    url = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
    with Verifier(ISSUER, jwks_url=url, clock=clock) as verifier, pytest.raises(KeysUnavailable):
        verifier.verify(key.token())


def test_keys_unavailable_and_stale_revocations_are_503_with_retry_after() -> None:
    from gatepass.web import problem_for

    for exc in (KeysUnavailable("no keys"), RevocationsStale("feed silent")):
        problem = problem_for(exc)
        assert problem is not None
        assert problem.status == 503
        assert "Retry-After" in problem.headers
        assert "no keys" not in json.dumps(problem.body)


def test_stale_limit_is_a_constructor_argument(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    with make_verifier(server, clock, stale_limit=0) as verifier:
        verifier.verify(key.token())
        server.serve_raw(500, b"")
        clock.advance(300)  # the default lifetime, no stale allowance
        with pytest.raises(KeysUnavailable):
            verifier.verify(key.token(now=clock.now))


# attacks ---------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_confusion_via_a_jwks_entry_whose_kty_does_not_match_alg_is_refused(
    server: JwksServer, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    genuine = Key()
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # An Ed25519 key labelled RS256, an RSA key labelled EdDSA, a symmetric key
    # labelled HS256: each would let the header pick a verifier for the wrong key.
    okp_as_rs256 = {**Key().jwk, "kid": "okp-as-rs256", "alg": "RS256"}
    rsa_as_eddsa = {
        **jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True),
        "kid": "rsa-as-eddsa",
        "alg": "EdDSA",
    }
    secret = secrets.token_bytes(32)
    oct_hs256 = {"kty": "oct", "k": b64(secret), "kid": "oct-hs256", "alg": "HS256"}
    server.serve({"keys": [okp_as_rs256, rsa_as_eddsa, oct_hs256, genuine.jwk]})
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "attacker",
        "iat": int(START),
        "exp": int(START) + 900,
        "jti": "j",
        "sid": "s",
        "roles": ["admin"],
    }
    forged = [
        jwt.encode(
            claims, rsa_private, algorithm="RS256", headers={"kid": "okp-as-rs256", "typ": "at+jwt"}
        ),
        jwt.encode(
            claims, secret, algorithm="HS256", headers={"kid": "oct-hs256", "typ": "at+jwt"}
        ),
    ]
    with caplog.at_level(logging.WARNING, logger="gatepass.verifier"):
        for token in forged:
            with pytest.raises(InvalidToken):
                verifier.verify(token)
    assert verifier.keys.kids == {genuine.kid}
    assert caplog.text.count("JWKS entry") == 3
    assert b64(secret) not in caplog.text
    assert rsa_as_eddsa["n"] not in caplog.text


def test_jku_header_pointing_at_the_attackers_jwks_is_ignored_and_refused(
    key: Key, verifier: Verifier
) -> None:
    attacker = Key(kid=key.kid)  # same kid, the attacker's key
    with JwksServer().running() as evil:
        evil.serve(jwks(attacker))
        for header in ("jku", "x5u"):
            forged = attacker.token(
                headers={"kid": key.kid, "typ": "at+jwt", header: evil.jwks_url}
            )
            with pytest.raises(InvalidToken):
                verifier.verify(forged)
        assert evil.count == 0


def test_embedded_jwk_header_is_ignored_and_refused(key: Key, verifier: Verifier) -> None:
    attacker = Key(kid=key.kid)
    forged = attacker.token(headers={"kid": key.kid, "typ": "at+jwt", "jwk": attacker.jwk})
    with pytest.raises(InvalidToken):
        verifier.verify(forged)
    without_kid = attacker.token(headers={"typ": "at+jwt", "jwk": attacker.jwk})
    with pytest.raises(InvalidToken):
        verifier.verify(without_kid)


def test_hs256_token_with_the_public_key_as_secret_is_refused(key: Key, verifier: Verifier) -> None:
    verifier.verify(key.token())
    public = key.private.public_key()
    secrets_tried = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(key.jwk).encode(),
        key.jwk["x"].encode(),
    ]
    claims = jwt.decode(key.token(), options={"verify_signature": False})
    for secret in secrets_tried:
        header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}).encode())
        payload = b64(json.dumps(claims).encode())
        mac = hmac.new(secret, f"{header}.{payload}".encode(), "sha256").digest()
        with pytest.raises(InvalidToken):
            verifier.verify(f"{header}.{payload}.{b64(mac)}")


def test_alg_none_token_is_refused(key: Key, verifier: Verifier) -> None:
    claims = jwt.decode(key.token(), options={"verify_signature": False})
    header = b64(json.dumps({"alg": "none", "kid": key.kid, "typ": "at+jwt"}).encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{b64(json.dumps(claims).encode())}.")
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{b64(json.dumps(claims).encode())}.AAAA")


def test_token_of_another_issuer_is_refused(key: Key, verifier: Verifier) -> None:
    for issuer in ("https://evil.example.test", ISSUER + "/", ISSUER.upper()):
        with pytest.raises(InvalidToken):
            verifier.verify(key.token(iss=issuer))


def test_token_for_another_audience_is_refused(key: Key, verifier: Verifier) -> None:
    for audience in ("billing", ["billing", "reports"], "", None):
        with pytest.raises(InvalidToken):
            verifier.verify(key.token(aud=audience))
    assert verifier.verify(key.token(aud=["billing", AUDIENCE])).user_id == "user-1"


def test_token_of_another_type_is_refused(key: Key, verifier: Verifier) -> None:
    for typ in ("JWT", "id_token", None):
        headers: dict[str, Any] = {"kid": key.kid}
        if typ is not None:
            headers["typ"] = typ
        with pytest.raises(InvalidToken):
            verifier.verify(key.token(headers=headers))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_jwks_is_refused(
    chunked: bool, server: JwksServer, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    key = Key()
    padding = [{"kid": f"pad-{i}", "kty": "oct", "k": "A" * 60} for i in range(1200)]
    document = {"keys": [key.jwk, *padding]}
    assert len(json.dumps(document)) > MAX_JWKS_BYTES
    server.serve(document, chunked=chunked)
    with (
        caplog.at_level(logging.WARNING, logger="gatepass.verifier"),
        pytest.raises(KeysUnavailable),
    ):
        verifier.verify(key.token())
    assert "over 65536 bytes" in caplog.text
    assert verifier.keys.kids == frozenset()


def test_compressed_jwks_is_refused_so_no_body_can_inflate_past_the_cap(
    clock: FakeClock,
) -> None:
    key = Key()
    bomb = gzip.compress(json.dumps({"keys": [key.jwk], "pad": " " * 10**7}).encode())

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    with (
        Verifier(
            ISSUER, jwks_url="https://auth.example.test/jwks", http_client=client, clock=clock
        ) as verifier,
        pytest.raises(KeysUnavailable),
    ):
        verifier.verify(key.token())
    client.close()


def test_redirect_to_the_attackers_jwks_is_not_followed(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    attacker = Key(kid=key.kid)
    with JwksServer().running() as evil:
        evil.serve(jwks(attacker))
        server.serve_raw(302, b"", headers={"Location": evil.jwks_url})
        with (
            httpx.Client(follow_redirects=True) as client,
            make_verifier(server, clock, http_client=client) as verifier,
            pytest.raises(KeysUnavailable),
        ):
            verifier.verify(attacker.token())
        assert evil.count == 0


def test_plain_http_to_a_remote_jwks_is_refused_unless_allowed_explicitly() -> None:
    for url in ("http://auth.example.test/jwks", "http://10.0.0.1/jwks"):
        with pytest.raises(ValueError, match="https"):
            check_jwks_url(url)
        assert check_jwks_url(url, allow_insecure_http=True) == url
    for url in ("http://127.0.0.1:8000/x", "http://localhost/x", "http://[::1]:80/x"):
        assert check_jwks_url(url) == url
    for url in ("file:///etc/passwd", "ftp://auth.example.test/jwks", "https:///jwks"):
        with pytest.raises(ValueError, match=r"http or https|no host"):
            check_jwks_url(url, allow_insecure_http=True)
    with pytest.raises(ValueError, match="credentials"):
        check_jwks_url("https://user:pw@auth.example.test/jwks")
    with pytest.raises(ValueError, match="https"):
        Verifier("http://auth.example.test")
    Verifier("http://auth.example.test", allow_insecure_http=True).close()


def test_misconfiguration_is_a_value_error_at_construction() -> None:
    for options, message in (
        ({"audience": ""}, "audience"),
        ({"leeway": -1}, "leeway"),
        ({"leeway": float("nan")}, "leeway"),
        ({"cooldown": -1}, "cooldown"),
        ({"stale_limit": float("inf")}, "stale_limit"),
        ({"min_cache_seconds": 0}, "min_cache_seconds"),
        ({"min_cache_seconds": 100, "max_cache_seconds": 50}, "min_cache_seconds"),
    ):
        with pytest.raises(ValueError, match=message):
            Verifier(ISSUER, **options)
    with pytest.raises(ValueError, match="issuer"):
        Verifier("")


# revocations -------------------------------------------------------------------------------


class Denylist:
    """A revocation source over a set the test fills (what a feed client keeps)."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.stale = False
        self.closed = False

    def check(self, claims: AccessClaims) -> None:
        if self.stale:
            raise RevocationsStale("feed silent")
        if claims.jti in self.revoked:
            raise InvalidToken("revoked")

    def close(self) -> None:
        self.closed = True


def test_revoked_token_is_refused_when_a_revocation_source_is_given(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    denylist = Denylist()
    token = key.token()
    with make_verifier(server, clock, revocations=denylist) as verifier:
        verified = verifier.verify(token)  # verified once: now in the token cache
        denylist.revoked.add(verified.token_id)
        with pytest.raises(InvalidToken):
            verifier.verify(token)
        denylist.stale = True
        with pytest.raises(RevocationsStale) as stale:
            verifier.verify(key.token())
        assert isinstance(stale.value, StoreUnavailable)
    assert denylist.closed


def test_without_a_revocation_source_a_revoked_token_stays_valid_until_exp(
    key: Key, verifier: Verifier
) -> None:
    """What the docstring says plainly: nothing here knows about revocations."""
    assert "stays valid" in (Verifier.__doc__ or "")
    assert "stays valid" in (AsyncVerifier.__doc__ or "")
    token = key.token()
    assert verifier.verify(token).user_id == verifier.verify(token).user_id


@pytest.mark.anyio
async def test_async_verifier_checks_revocations_and_closes_them(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    denylist = Denylist()
    token = key.token()
    async with AsyncVerifier(
        ISSUER, jwks_url=server.jwks_url, clock=clock, revocations=denylist
    ) as verifier:
        verified = await verifier.verify_authorization(f"Bearer {token}")
        denylist.revoked.add(verified.token_id)
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
    assert denylist.closed
    with pytest.raises(RuntimeError):
        await verifier.verify(token)


def test_closed_verifier_refuses_to_verify(key: Key, server: JwksServer, clock: FakeClock) -> None:
    verifier = make_verifier(server, clock)
    verifier.close()
    verifier.close()
    with pytest.raises(RuntimeError):
        verifier.verify(key.token())


def test_injected_client_stays_open_after_close(
    key: Key, server: JwksServer, clock: FakeClock
) -> None:
    with httpx.Client() as client:
        with make_verifier(server, clock, http_client=client) as verifier:
            verifier.verify(key.token())
        assert not client.is_closed


# rotation against the real server -----------------------------------------------------------


def run_cli(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [*gatepass_command(), *args],
        cwd=cwd,
        env=server_env({"GATEPASS_DEV": "1"}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@pytest.mark.e2e
def test_keys_rotate_reaches_the_verifier_through_the_unknown_kid_path_without_a_restart(
    tmp_path: Path,
) -> None:
    with (
        running_server(tmp_path, {"GATEPASS_DEV": "1"}) as gatepass,
        httpx.Client(base_url=gatepass.url, timeout=30) as client,
    ):
        email = "rotation@example.com"
        registered = client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = {"email": email, "password": PASSWORD, "client": "api"}

        def access_token() -> str:
            response = client.post("/auth/login", json=login)
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        requests: list[str] = []
        counting = httpx.Client(
            timeout=10, event_hooks={"request": [lambda r: requests.append(r.url.path)]}
        )
        # A lifetime longer than the test, so only an unknown kid can cause a fetch.
        verifier = Verifier(
            gatepass.url, http_client=counting, min_cache_seconds=3600, max_cache_seconds=3600
        )
        old = access_token()
        assert verifier.verify(old).user_id
        assert requests == ["/.well-known/jwks.json"]
        held_before = verifier.keys.kids

        # Twice: the first promotes the next key (already published, so already
        # held); the second makes a key the verifier has never seen sign.
        run_cli(tmp_path, "keys", "rotate")
        run_cli(tmp_path, "keys", "rotate")
        deadline = time.monotonic() + 45
        new = access_token()
        while kid_of(new) in held_before and time.monotonic() < deadline:
            time.sleep(0.5)
            new = access_token()
        assert kid_of(new) not in held_before, "the server did not switch keys in time"

        pid = gatepass.pid
        verified = verifier.verify(new)
        assert verified.roles == ("user",)
        assert requests == ["/.well-known/jwks.json"] * 2  # the unknown kid fetched once
        assert kid_of(new) in verifier.keys.kids
        assert verifier.verify(old).user_id == verified.user_id  # the retired key still verifies
        forged = Key().token(headers={"kid": "never-published", "typ": "at+jwt"})
        with pytest.raises(InvalidToken):
            verifier.verify(forged)
        assert len(requests) == 2  # within the cooldown
        assert gatepass.pid == pid  # the same process: no restart
        assert gatepass.process.poll() is None
        verifier.close()
        counting.close()
