"""Access tokens (JWT, RFC 9068 shape): issue, and strict verification over any key source.

The same :class:`TokenVerifier` runs in the auth server (over its key ring) and in
:mod:`gatepass.verifier` (over a JWKS fetched from the issuer), so this module
imports nothing of the server: no store, no web framework. Verification is one
early-raising sequence in a fixed order:

1. size (at most 8 KiB) and shape: three base64url segments, canonically encoded;
2. header: a JSON object with only ``alg``, ``kid`` and ``typ`` (so ``jku``,
   ``x5u``, ``jwk``, ``x5c`` and ``crit`` are refused, never fetched); ``typ``
   is ``at+jwt``;
3. the key is chosen by ``kid`` from the key source, and the token's ``alg``
   must equal that key's algorithm: the header never chooses the algorithm;
4. the signature, checked by PyJWT's algorithm for that key;
5. the claims, against the injected clock.

Every failure raises :class:`InvalidToken`; its text is for logs, and the HTTP
layer answers with a fixed body. A ``kid`` the source does not hold raises its
subclass :class:`UnknownSigningKey`, so the key holder may re-read its keys (at a
bounded rate) and try once more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm, get_default_algorithms

from gatepass.clock import Clock
from gatepass.errors import InvalidToken as InvalidToken  # re-exported
from gatepass.errors import UnknownSigningKey as UnknownSigningKey  # re-exported
from gatepass.freshness import UNKNOWN_PROOF, SignInProof, parse_amr

AlgorithmName = Literal["EdDSA", "ES256", "RS256", "HS256"]
SUPPORTED_ALGORITHMS: tuple[AlgorithmName, ...] = ("EdDSA", "ES256", "RS256", "HS256")
#: Algorithms a published key may have: a symmetric key is never published.
PUBLIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
ALLOWED_HEADER_PARAMS = frozenset({"alg", "kid", "typ"})
MAX_TOKEN_BYTES = 8 * 1024
MAX_CLAIM_STRING = 128
MAX_KID_LENGTH = 128
#: The smallest RSA modulus a fetched key may have.
MIN_RSA_BITS = 2048
#: Verified tokens remembered per process; a repeat skips parsing and the signature.
VERIFIED_CACHE_SIZE = 10_000
#: Distinct valid headers remembered (a deployment has one per key, give or take).
HEADER_CACHE_SIZE = 64

_SEGMENT = r"[A-Za-z0-9_-]+"
_TOKEN_SHAPE = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")
#: The only algorithms anything here signs or verifies with, by JOSE name.
ALGORITHMS: Mapping[str, Algorithm] = {
    name: get_default_algorithms()[name] for name in SUPPORTED_ALGORITHMS
}


class VerificationKey(Protocol):
    """What verification needs of a key: its ``kid``, its one algorithm, the key."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> str: ...

    @property
    def verifying_key(self) -> Any: ...


class KeySource(Protocol):
    """Keys by ``kid``, read from memory (a fetch, if any, is the holder's business)."""

    def get(self, kid: str) -> VerificationKey | None: ...


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key taken from a JWKS entry."""

    kid: str
    alg: str
    verifying_key: Any

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid!r}, alg={self.alg!r})"


_CURVES = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519"), "RS256": ("RSA", None)}


def key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """A :class:`PublicKey` from one JWKS entry, or :class:`ValueError`.

    The entry must name its ``kid`` and an asymmetric ``alg`` gatepass verifies, and
    its key type and curve must be that algorithm's (an ``alg`` never turns a key
    of another type into a verifier). ``use``, when present, is ``sig``; a private
    part is refused outright, since a JWKS that leaks one is broken.
    """
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise ValueError("JWK without a usable kid")
    if alg not in PUBLIC_ALGORITHMS or not isinstance(alg, str):
        raise ValueError("JWK with an algorithm gatepass does not verify")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("JWK not meant for signatures")
    if "d" in jwk:
        raise ValueError("JWK carries private key material")
    kty, curve = _CURVES[alg]
    if jwk.get("kty") != kty or (curve is not None and jwk.get("crv") != curve):
        raise ValueError("JWK key type does not match its algorithm")
    try:
        key = ALGORITHMS[alg].from_jwk(dict(jwk))
    except (jwt.exceptions.InvalidKeyError, ValueError, TypeError, KeyError):
        raise ValueError("JWK is not a valid public key") from None
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("JWK carries private key material")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("JWK carries private key material")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError("RSA key too short")
    return PublicKey(kid=kid, alg=alg, verifying_key=key)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str
    roles: tuple[str, ...]
    iat: float
    exp: float
    #: When and how the user signed in (RFC 9068 section 2.2.1; RFC 8176 values);
    #: ``0`` / ``()`` when the token carries none.
    auth_time: float = 0.0
    amr: tuple[str, ...] = ()


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
    # Optional (tokens from before they were issued lack them); malformed is refused.
    auth_time = _time_claim(claims, "auth_time", default=0.0)
    if auth_time - leeway > now:
        raise InvalidToken("auth_time in the future")
    amr = claims.get("amr", [])
    if not isinstance(amr, list) or not all(isinstance(v, str) for v in amr):
        raise InvalidToken("claim amr malformed")
    return AccessClaims(
        sub=_claim_string(claims, "sub"),
        jti=_claim_string(claims, "jti"),
        sid=_claim_string(claims, "sid"),
        roles=tuple(roles),
        iat=iat,
        exp=exp,
        auth_time=auth_time,
        amr=parse_amr(amr),
    )


class TokenVerifier:
    """Strict verification of access tokens against a :class:`KeySource`.

    Pure CPU and thread-safe: no I/O, so the auth server, the async verifier and
    the sync verifier share it. Revocation is not checked here (the caller does, on
    every request, cached or not).
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: float,
        clock: Clock,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("an issuer and an audience are required")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        self._cache_size = cache_size
        # SHA-256 of a token -> its verified claims. Only ``exp`` can turn a verified
        # token invalid with time, so a hit re-checks it; a hit also re-checks that
        # its key is still held, so a removed key fails its tokens at once.
        self._verified: dict[bytes, tuple[AccessClaims, str]] = {}
        # Encoded header -> (kid, alg), for headers of tokens whose signature passed.
        self._headers: dict[str, tuple[str, str]] = {}
        # Only insertions and evictions take it; reads are single dict operations.
        self._lock = threading.Lock()

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or :class:`InvalidToken` (:class:`UnknownSigningKey`
        when its ``kid`` is not in the key source). See the module docstring."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidToken("too long or not ASCII")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            claims, kid = cached
            if self._keys.get(kid) is None:
                self._forget(digest)
                raise InvalidToken("signing key removed")
            if claims.exp + self._leeway > self._clock():
                return claims
            self._forget(digest)
            raise InvalidToken("expired")
        claims, kid = self._verify_uncached(token)
        self._remember(self._verified, digest, (claims, kid), self._cache_size)
        return claims

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are remembered (bounded by the cache size)."""
        return len(self._verified)

    def _remember(self, cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
        # Every change to a cache happens under the lock: an eviction iterates, and
        # a change from another thread during that would break it.
        with self._lock:
            while len(cache) >= limit:
                del cache[next(iter(cache))]
            cache[key] = value

    def _forget(self, digest: bytes) -> None:
        with self._lock:
            self._verified.pop(digest, None)

    def _key_for_header(self, header_b64: str) -> VerificationKey:
        """Steps 2 and 3: the header's rules, and the key it names (by ``kid`` only).

        Tokens of one deployment share a handful of headers, so a header is
        remembered (bounded) by its exact encoding once a token carrying it passed
        its signature check: junk tokens cannot flood the memory out. The key is
        still looked up, and its algorithm compared, every time, so a removed or
        replaced key fails at once.
        """
        known = self._headers.get(header_b64)
        if known is not None:
            known_kid, known_alg = known
            key = self._keys.get(known_kid)
            if key is None:
                raise UnknownSigningKey(known_kid)
            if key.alg != known_alg:
                raise InvalidToken("alg does not match the key")
            return key
        header = _json_object(_b64decode_canonical(header_b64), "header")
        if not set(header) <= ALLOWED_HEADER_PARAMS:
            raise InvalidToken("header parameter not allowed")
        typ, kid, alg = header.get("typ"), header.get("kid"), header.get("alg")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
            raise InvalidToken("wrong typ")
        if not isinstance(kid, str) or not isinstance(alg, str):
            raise InvalidToken("kid or alg missing")
        if not kid or len(kid) > MAX_KID_LENGTH:
            raise InvalidToken("kid malformed")
        key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        if alg != key.alg:
            raise InvalidToken("alg does not match the key")
        return key

    def _verify_uncached(self, token: str) -> tuple[AccessClaims, str]:
        if _TOKEN_SHAPE.fullmatch(token) is None:
            raise InvalidToken("not a compact JWS")
        header_b64, payload_b64, signature_b64 = token.split(".")
        key = self._key_for_header(header_b64)
        signature = _b64decode_canonical(signature_b64)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not ALGORITHMS[key.alg].verify(signing_input, key.verifying_key, signature):
            raise InvalidToken("bad signature")
        if header_b64 not in self._headers:
            self._remember(self._headers, header_b64, (key.kid, key.alg), HEADER_CACHE_SIZE)
        claims = _json_object(_b64decode_canonical(payload_b64), "payload")
        verified = validate_claims(
            claims,
            issuer=self._issuer,
            audience=self._audience,
            now=self._clock(),
            leeway=self._leeway,
        )
        return verified, key.kid


class SigningKey(VerificationKey, Protocol):
    @property
    def signing_key(self) -> Any: ...


class SigningKeys(Protocol):
    """A key ring as :class:`AccessTokens` uses it (see :class:`gatepass.keys.KeyRing`)."""

    def get(self, kid: str) -> VerificationKey | None: ...

    def signing_key(self) -> SigningKey: ...

    def is_fresh(self) -> bool: ...

    async def refresh_if_stale(self) -> None: ...

    async def lookup(self, kid: str) -> VerificationKey | None: ...


class AccessTokens:
    """Issues access tokens with a key ring's current key, and verifies them."""

    def __init__(
        self,
        ring: SigningKeys,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        leeway: float,
        clock: Clock,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self.ring = ring
        self._issuer = issuer
        self._audience = audience
        self.ttl = ttl
        self._clock = clock
        self.verifier = TokenVerifier(
            ring,
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            clock=clock,
            cache_size=cache_size,
        )

    def issue(
        self,
        user_id: str,
        family_id: str,
        roles: Sequence[str],
        *,
        proof: SignInProof | None = None,
    ) -> IssuedAccessToken:
        """Sign an access token for ``user_id`` in refresh family ``family_id``, carrying
        the family's sign-in ``proof`` as ``auth_time`` and ``amr``."""
        key = self.ring.signing_key()
        iat = int(self._clock())
        proof = proof or UNKNOWN_PROOF
        claims = AccessClaims(
            sub=user_id,
            jti=secrets.token_urlsafe(16),
            sid=family_id,
            roles=tuple(roles),
            iat=iat,
            exp=iat + self.ttl,
            auth_time=int(proof.auth_time),
            amr=proof.amr,
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
        if claims.auth_time:
            payload["auth_time"] = int(claims.auth_time)
            payload["amr"] = list(claims.amr)
        token = jwt.encode(
            payload,
            key.signing_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return IssuedAccessToken(token, claims, self.ttl)

    async def verify(self, token: str) -> AccessClaims:
        """Verify ``token`` or raise :class:`InvalidToken`; an unknown ``kid`` may
        re-read the key ring once (at the ring's bounded rate) before it is refused.

        Revocation is not checked here (see :mod:`gatepass.revocation`).
        """
        await self.ring.refresh_if_stale()
        try:
            return self.verifier.verify(token)
        except UnknownSigningKey as exc:
            if await self.ring.lookup(exc.kid) is None:
                raise
        return self.verifier.verify(token)

    def verify_now(self, token: str) -> AccessClaims | None:
        """:meth:`verify` with no I/O: the claims, :class:`InvalidToken`, or ``None``
        when only :meth:`verify` can tell (the ring is due for a reload, or the token
        names a key this process does not hold yet)."""
        if not self.ring.is_fresh():
            return None
        try:
            return self.verifier.verify(token)
        except UnknownSigningKey:
            return None

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are remembered (bounded by :data:`VERIFIED_CACHE_SIZE`)."""
        return self.verifier.cached_tokens
