"""Signing keys, JWKS, and access tokens (JWT, RFC 9068 shape).

Verification is one early-raising sequence in a fixed order:

1. size (at most 8 KiB) and shape: three base64url segments, canonically encoded;
2. header: a JSON object with only ``alg``, ``kid`` and ``typ`` (so ``jku``,
   ``x5u``, ``jwk``, ``x5c`` and ``crit`` are refused, never fetched); ``typ``
   is ``at+jwt``;
3. the key is chosen by ``kid`` from our own key ring, and the token's ``alg``
   must equal that key's algorithm: the header never chooses the algorithm;
4. the signature, checked by PyJWT's algorithm for that key;
5. the claims, against the injected clock.

Every failure raises :class:`InvalidToken`; its text is for logs, and the HTTP
layer answers with a fixed body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, get_default_algorithms

from gatepass._singleflight import SingleFlight
from gatepass.clock import Clock
from gatepass.errors import InvalidToken as InvalidToken  # re-exported
from gatepass.stores.base import KeyStore, SigningKeyRecord

AlgorithmName = Literal["EdDSA", "ES256", "RS256", "HS256"]
SUPPORTED_ALGORITHMS: tuple[AlgorithmName, ...] = ("EdDSA", "ES256", "RS256", "HS256")
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
ALLOWED_HEADER_PARAMS = frozenset({"alg", "kid", "typ"})
MAX_TOKEN_BYTES = 8 * 1024
MAX_CLAIM_STRING = 128
KID_BYTES = 12
HMAC_KEY_BYTES = 32
RSA_KEY_BITS = 2048
#: Every node re-reads the key ring this often, so a rotation reaches all of them
#: within this time without a restart; the JWKS ``max-age`` matches it.
KEY_RELOAD_SECONDS = 30
#: Verified tokens remembered per process; a repeat skips parsing and the signature.
VERIFIED_CACHE_SIZE = 10_000
#: Distinct valid headers remembered (a deployment has one per key, give or take).
HEADER_CACHE_SIZE = 64
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


_SEGMENT = r"[A-Za-z0-9_-]+"
_TOKEN_SHAPE = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")
_ALGORITHMS: dict[str, Algorithm] = {
    name: get_default_algorithms()[name] for name in SUPPORTED_ALGORITHMS
}


# keys -----------------------------------------------------------------------


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
    algorithm = _ALGORITHMS[record.alg]
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
        if algorithm not in _ALGORITHMS:
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


# access tokens ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str
    roles: tuple[str, ...]
    iat: float
    exp: float


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    claims: AccessClaims
    expires_in: int

    def __repr__(self) -> str:
        return f"IssuedAccessToken(jti={self.claims.jti!r})"


def _b64decode_canonical(segment: str) -> bytes:
    """Decode one base64url segment, refusing any encoding but the canonical one."""
    if len(segment) % 4 == 1:
        raise InvalidToken("bad base64url length")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("bad base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise InvalidToken("non-canonical base64url")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidToken(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"{what} is not an object")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def _time_claim(claims: dict[str, Any], name: str, default: float | None = None) -> float:
    value = claims.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidToken(f"claim {name} missing or malformed")
    try:
        return float(value)
    except OverflowError:
        raise InvalidToken(f"claim {name} out of range") from None


def _claim_string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_STRING:
        raise InvalidToken(f"claim {name} missing or malformed")
    return value


def validate_claims(
    claims: dict[str, Any], *, issuer: str, audience: str, now: float, leeway: float
) -> AccessClaims:
    """Check registered and gatepass claims against ``now``. Pure."""
    exp = _time_claim(claims, "exp")
    iat = _time_claim(claims, "iat")
    nbf = _time_claim(claims, "nbf", default=0.0)
    if exp + leeway <= now:
        raise InvalidToken("expired")
    if iat - leeway > now:
        raise InvalidToken("issued in the future")
    if nbf - leeway > now:
        raise InvalidToken("not yet valid")
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidToken("wrong audience")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("claim roles missing or malformed")
    return AccessClaims(
        sub=_claim_string(claims, "sub"),
        jti=_claim_string(claims, "jti"),
        sid=_claim_string(claims, "sid"),
        roles=tuple(roles),
        iat=iat,
        exp=exp,
    )


class AccessTokens:
    """Issues and verifies access tokens with a :class:`KeyRing`."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        leeway: float,
        clock: Clock,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self.ring = ring
        self._cache_size = cache_size
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl
        self._leeway = leeway
        self._clock = clock
        # SHA-256 of a token -> its verified claims. Only ``exp`` can turn a verified
        # token invalid with time, so a hit re-checks it; revocation is checked by the
        # caller on every request, cached or not.
        self._verified: dict[bytes, tuple[AccessClaims, str]] = {}
        # Encoded header -> kid, for headers that passed every header rule.
        self._headers: dict[str, str] = {}

    def issue(self, user_id: str, family_id: str, roles: Sequence[str]) -> IssuedAccessToken:
        """Sign an access token for ``user_id`` in refresh family ``family_id``."""
        key = self.ring.signing_key()
        iat = int(self._clock())
        claims = AccessClaims(
            sub=user_id,
            jti=secrets.token_urlsafe(16),
            sid=family_id,
            roles=tuple(roles),
            iat=iat,
            exp=iat + self.ttl,
        )
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": claims.sub,
            "exp": iat + self.ttl,
            "iat": iat,
            "jti": claims.jti,
            "sid": claims.sid,
            "roles": list(claims.roles),
        }
        token = jwt.encode(
            payload,
            key.signing_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return IssuedAccessToken(token, claims, self.ttl)

    async def verify(self, token: str) -> AccessClaims:
        """Verify ``token`` or raise :class:`InvalidToken`. See the module docstring.

        Revocation is not checked here (see :mod:`gatepass.revocation`).
        """
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidToken("too long or not ASCII")
        await self.ring.refresh_if_stale()
        digest = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            claims, kid = cached
            if self.ring.get(kid) is None:
                del self._verified[digest]
                raise InvalidToken("signing key removed")
            if claims.exp + self._leeway > self._clock():
                return claims
            del self._verified[digest]
            raise InvalidToken("expired")
        claims, kid = await self._verify_uncached(token)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = (claims, kid)
        return claims

    async def _key_for_header(self, header_b64: str) -> LoadedKey:
        """Steps 2 and 3: the header's rules, and the key it names (by ``kid`` only).

        Tokens of one deployment share a handful of headers, so a header that
        passed is remembered (bounded) by its exact encoding; the key is still
        looked up every time, so a removed key fails at once.
        """
        known_kid = self._headers.get(header_b64)
        if known_kid is not None:
            key = self.ring.get(known_kid)
            if key is None:
                raise InvalidToken("unknown kid")
            return key
        header = _json_object(_b64decode_canonical(header_b64), "header")
        if not set(header) <= ALLOWED_HEADER_PARAMS:
            raise InvalidToken("header parameter not allowed")
        typ, kid, alg = header.get("typ"), header.get("kid"), header.get("alg")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
            raise InvalidToken("wrong typ")
        if not isinstance(kid, str) or not isinstance(alg, str):
            raise InvalidToken("kid or alg missing")
        key = await self.ring.lookup(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        if alg != key.alg:
            raise InvalidToken("alg does not match the key")
        if len(self._headers) >= HEADER_CACHE_SIZE:
            del self._headers[next(iter(self._headers))]
        self._headers[header_b64] = kid
        return key

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are remembered (bounded by :data:`VERIFIED_CACHE_SIZE`)."""
        return len(self._verified)

    async def _verify_uncached(self, token: str) -> tuple[AccessClaims, str]:
        if _TOKEN_SHAPE.fullmatch(token) is None:
            raise InvalidToken("not a compact JWS")
        header_b64, payload_b64, signature_b64 = token.split(".")
        key = await self._key_for_header(header_b64)
        signature = _b64decode_canonical(signature_b64)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not _ALGORITHMS[key.alg].verify(signing_input, key.verifying_key, signature):
            raise InvalidToken("bad signature")
        claims = _json_object(_b64decode_canonical(payload_b64), "payload")
        verified = validate_claims(
            claims,
            issuer=self._issuer,
            audience=self._audience,
            now=self._clock(),
            leeway=self._leeway,
        )
        return verified, key.kid
