"""Micro-benchmarks: µs per token for gatepass's verify against PyJWT and the raw floor.

Usage: python bench/micro.py [--quick]

For each algorithm: gatepass ``AccessTokens.verify`` on a token it has not seen
(first verify: parse, header checks, signature, claims), the same call on a
repeated token (verified-token cache), PyJWT's ``jwt.decode`` with the same
prepared key, and the floor: the bare signature check through ``cryptography``
(or ``hmac``) with nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from gatepass.keys import KeyRing
from gatepass.stores.sql import SqlStore
from gatepass.tokens import AccessTokens

ISSUER = "https://auth.bench"
AUDIENCE = "bench"
ALGORITHMS = ("EdDSA", "ES256", "RS256", "HS256")


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def floor_check(alg: str, key: object, token: str) -> Callable[[], None]:
    head, payload, sig = token.split(".")
    data = f"{head}.{payload}".encode()
    signature = b64d(sig)
    if alg == "HS256":
        assert isinstance(key, bytes)
        return lambda: hmac.compare_digest(hmac.new(key, data, hashlib.sha256).digest(), signature)
    if alg == "EdDSA":
        return lambda: key.verify(signature, data)  # type: ignore[attr-defined]
    if alg == "ES256":
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        return lambda: key.verify(der, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    return lambda: key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]


def per_call_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of ``n`` calls, in µs per call."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


async def bench_alg(alg: str, n: int, folder: Path) -> dict[str, float]:
    store = SqlStore(f"sqlite+aiosqlite:///{folder / alg}.db")
    await store.start()
    ring = KeyRing(store, alg, retention=3600, clock=time.time)
    await ring.start()
    tokens = AccessTokens(
        ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl=3600,
        leeway=10,
        clock=time.time,
        cache_size=n * 6,
    )
    key = ring.signing_key()
    fresh = [tokens.issue(f"user-{i}", "family", ["user"]).token for i in range(n * 5)]
    it = iter(fresh)

    async def first_verify_loop() -> float:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await tokens.verify(next(it))
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    async def cached_loop() -> float:
        token = fresh[0]
        await tokens.verify(token)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await tokens.verify(token)
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    first = await first_verify_loop()
    cached = await cached_loop()
    sample = fresh[0]
    pyjwt = per_call_us(
        lambda: jwt.decode(
            sample, key.verifying_key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER
        ),
        n,
    )
    floor = per_call_us(floor_check(alg, key.verifying_key, sample), n)
    jkey = joserfc_key(alg, key.verifying_key)
    joserfc = per_call_us(lambda: joserfc_jwt.decode(sample, jkey, algorithms=[alg]), n)
    await store.close()
    return {"first": first, "cached": cached, "pyjwt": pyjwt, "joserfc": joserfc, "floor": floor}


def joserfc_key(alg: str, verifying_key: object) -> object:
    """The same key as a joserfc key object (its decode checks the signature only)."""
    kinds = {"EdDSA": OKPKey, "ES256": ECKey, "RS256": RSAKey, "HS256": OctKey}
    return kinds[alg].import_key(verifying_key)  # type: ignore[attr-defined]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        results = {alg: await bench_alg(alg, n, Path(tmp)) for alg in ALGORITHMS}
    print(
        f"{'algorithm':<9} {'gatepass first':>15} {'gatepass cached':>16} {'PyJWT decode':>13} "
        f"{'joserfc decode':>15} {'floor':>8} {'first/PyJWT':>12} {'first-floor':>12} "
        f"{'first/cached':>13}"
    )
    for alg, r in results.items():
        print(
            f"{alg:<9} {r['first']:>12.1f} µs {r['cached']:>13.1f} µs {r['pyjwt']:>10.1f} µs "
            f"{r['joserfc']:>12.1f} µs {r['floor']:>5.1f} µs {r['first'] / r['pyjwt']:>11.2f}x "
            f"{r['first'] - r['floor']:>9.1f} µs {r['first'] / r['cached']:>12.1f}x"
        )
    print(f"(median of 5 runs of {n} calls each; floor = the signature check alone)")


if __name__ == "__main__":
    asyncio.run(main())
