"""Signing keys: generation, the rotation plan, and the key ring every node holds.

The ring is plain data in the key store: the ``current`` key signs; ``next`` (already
published, so verifiers know it before it signs), ``current`` and ``retired`` keys
within their retention all verify. ``gatepass keys rotate`` and the server apply the
same pure :func:`plan_rotation`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gatepass._singleflight import SingleFlight
from gatepass.clock import Clock
from gatepass.stores.base import KeyStore, SigningKeyRecord
from gatepass.tokens import ALGORITHMS

KID_BYTES = 12
HMAC_KEY_BYTES = 32
RSA_KEY_BITS = 2048
#: Every node re-reads the key ring this often, so a rotation reaches all of them
#: within this time without a restart; the JWKS ``max-age`` matches it.
KEY_RELOAD_SECONDS = 30
#: An unknown ``kid`` may trigger an early re-read at most this often.
UNKNOWN_KID_RELOAD_SECONDS = 5


def retired_key_retention(access_token_ttl: float, leeway: float) -> float:
    """How long a retired key stays published and usable for verification.

    Until every token it signed has expired, counting a node that keeps signing
    with it until its next key reload. The server and ``gatepass keys rotate`` both
    use this one formula: if they drifted, a rotation could delete a key whose
    tokens still verify elsewhere.
    """
    return access_token_ttl + leeway + KEY_RELOAD_SECONDS


def generate_key(alg: str, now: float, state: Literal["next", "current"]) -> SigningKeyRecord:
    """A fresh signing key for ``alg`` (private material as PKCS#8 PEM, or the HMAC secret)."""
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if alg == "HS256":
        material = secrets.token_urlsafe(HMAC_KEY_BYTES)
    else:
        if alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        else:
            raise ValueError(f"unsupported algorithm {alg!r}")
        material = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
    return SigningKeyRecord(
        kid=secrets.token_urlsafe(KID_BYTES),
        alg=alg,
        state=state,
        private_material=material,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """A key ready for use: prepared once, never per request."""

    kid: str
    alg: str
    state: str
    signing_key: Any
    verifying_key: Any
    public_jwk: dict[str, Any] | None
    retired_at: float | None

    def __repr__(self) -> str:
        return f"LoadedKey(kid={self.kid!r}, alg={self.alg!r}, state={self.state!r})"


def load_key(record: SigningKeyRecord) -> LoadedKey:
    algorithm = ALGORITHMS[record.alg]
    if record.alg == "HS256":
        secret = algorithm.prepare_key(record.private_material.encode("ascii"))
        signing, verifying, jwk = secret, secret, None
    else:
        private = serialization.load_pem_private_key(
            record.private_material.encode("ascii"), password=None
        )
        signing = algorithm.prepare_key(private)
        verifying = private.public_key()
        jwk = {
            **algorithm.to_jwk(verifying, as_dict=True),
            "kid": record.kid,
            "alg": record.alg,
            "use": "sig",
        }
    return LoadedKey(
        kid=record.kid,
        alg=record.alg,
        state=record.state,
        signing_key=signing,
        verifying_key=verifying,
        public_jwk=jwk,
        retired_at=record.retired_at,
    )


@dataclass(frozen=True, slots=True)
class KeyPlan:
    upserts: tuple[SigningKeyRecord, ...]
    deletes: tuple[str, ...]


def plan_rotation(
    keys: Sequence[SigningKeyRecord], alg: str, now: float, retention: float, *, force: bool
) -> KeyPlan:
    """What to change so that a key of ``alg`` signs. Pure.

    Without ``force``, nothing changes while a current key of ``alg`` exists
    (but expired retired keys are dropped). With it, or when the algorithm
    changed: the current key retires, the ``next`` key of ``alg`` (already
    published) becomes current, and a new ``next`` is made.
    """
    deletes = tuple(
        k.kid
        for k in keys
        if k.state == "retired" and k.retired_at is not None and k.retired_at + retention <= now
    )
    currents = [k for k in keys if k.state == "current"]
    if not force and any(k.alg == alg for k in currents):
        return KeyPlan((), deletes)
    upserts: list[SigningKeyRecord] = [
        replace(k, state="retired", retired_at=now) for k in currents
    ]
    waiting = [k for k in keys if k.state == "next" and k.alg == alg]
    promoted = (
        replace(waiting[-1], state="current") if waiting else generate_key(alg, now, "current")
    )
    upserts.append(promoted)
    # Stale ``next`` keys of another algorithm are dropped; the new one is published now.
    deletes += tuple(k.kid for k in keys if k.state == "next" and k.kid != promoted.kid)
    upserts.append(generate_key(alg, now, "next"))
    return KeyPlan(tuple(upserts), deletes)


class KeyRing:
    """The deployment's signing keys, re-read from the store every :data:`KEY_RELOAD_SECONDS`."""

    def __init__(self, store: KeyStore, algorithm: str, retention: float, clock: Clock) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self._store = store
        self.algorithm = algorithm
        self._retention = retention
        self._clock = clock
        self._keys: dict[str, LoadedKey] = {}
        self._signing: LoadedKey | None = None
        self._loaded_at = float("-inf")
        self._early_reload_at = float("-inf")
        self._reloads: SingleFlight[None, None] = SingleFlight()
        self._read_tickets = 0
        self._installed_ticket = 0

    def __repr__(self) -> str:
        return f"KeyRing(alg={self.algorithm!r}, kids={sorted(self._keys)!r})"

    async def start(self) -> None:
        """Make sure a current key of the configured algorithm exists, then load."""
        await self._apply(force=False)

    async def rotate(self) -> LoadedKey:
        """Retire the current key, promote the next one, publish a new next one."""
        await self._apply(force=True)
        return self.signing_key()

    async def _apply(self, *, force: bool) -> None:
        records = await self._store.list_signing_keys()
        plan = plan_rotation(records, self.algorithm, self._clock(), self._retention, force=force)
        if plan.upserts or plan.deletes:
            await self._store.save_signing_keys(plan.upserts, plan.deletes)
        # A read of our own, not a shared one that may have started before the write.
        await self._read_ring()

    async def reload(self) -> None:
        """Re-read the ring. Retired keys past their retention are left out (they are
        deleted at the next start or rotation); unchanged keys are not re-parsed.

        Concurrent callers share one read, and a read never replaces the ring with
        an older one: each read takes a ticket, and a result that comes back after a
        later-started read was installed is dropped.
        """
        await self._reloads.run(None, self._read_ring)

    async def _read_ring(self) -> None:
        self._read_tickets += 1
        ticket = self._read_tickets
        records = await self._store.list_signing_keys()
        if ticket < self._installed_ticket:
            return
        now = self._clock()
        keys: dict[str, LoadedKey] = {}
        for record in records:
            if record.state == "retired" and (
                record.retired_at is None or record.retired_at + self._retention <= now
            ):
                continue
            known = self._keys.get(record.kid)
            unchanged = (
                known is not None
                and known.state == record.state
                and known.retired_at == record.retired_at
            )
            keys[record.kid] = known if known is not None and unchanged else load_key(record)
        currents = [k for k in keys.values() if k.state == "current" and k.alg == self.algorithm]
        if currents:
            self._signing = currents[-1]
        self._keys = keys
        self._installed_ticket = ticket
        self._loaded_at = self._clock()

    def is_fresh(self) -> bool:
        """Whether the ring was read within :data:`KEY_RELOAD_SECONDS` (no reload due)."""
        return self._clock() - self._loaded_at < KEY_RELOAD_SECONDS

    async def refresh_if_stale(self) -> None:
        """Re-read the ring once :data:`KEY_RELOAD_SECONDS` have passed; concurrent
        callers share that one read."""
        if self._clock() - self._loaded_at < KEY_RELOAD_SECONDS:
            return
        await self.reload()

    async def lookup(self, kid: str) -> LoadedKey | None:
        """The key for ``kid``; an unknown kid may re-read the ring, at a bounded rate."""
        key = self._keys.get(kid)
        if key is None and self._clock() - self._early_reload_at >= UNKNOWN_KID_RELOAD_SECONDS:
            self._early_reload_at = self._clock()
            await self.reload()
            key = self._keys.get(kid)
        return key

    def get(self, kid: str) -> LoadedKey | None:
        return self._keys.get(kid)

    def signing_key(self) -> LoadedKey:
        if self._signing is None:
            raise RuntimeError("the key ring has no current key; call start() first")
        return self._signing

    def keys(self) -> Iterable[LoadedKey]:
        """Every key currently published (next, current, and retired within retention)."""
        return self._keys.values()

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Public keys only. A symmetric (HS256) key is never published."""
        return {"keys": [k.public_jwk for k in self._keys.values() if k.public_jwk is not None]}
