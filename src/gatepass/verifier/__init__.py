"""Verify gatepass access tokens in a resource server, offline, with the issuer's JWKS.

Install with ``pip install 'gatepass[verifier]'``; importing this package loads no
part of the auth server (no store, argon2, settings or web framework)::

    from gatepass.verifier import Verifier

    with Verifier("https://auth.example.com", audience="gatepass") as verifier:
        caller = verifier.verify_authorization(request.headers.get("Authorization"))
        if "admin" not in caller.roles:
            ...  # 403

    # asyncio
    async with AsyncVerifier("https://auth.example.com") as verifier:
        caller = await verifier.verify(token)

:class:`~gatepass.errors.InvalidToken` (an
:class:`~gatepass.errors.AuthenticationFailed`) means 401;
:class:`~gatepass.errors.KeysUnavailable` and
:class:`~gatepass.errors.RevocationsStale` (both
:class:`~gatepass.errors.StoreUnavailable`) mean 503: the verifier cannot judge
the token, so it refuses it.

Without a ``revocations=`` source, a revoked token stays valid until its ``exp``.
See ``docs/verifier.md`` for every bound and default.
"""

from __future__ import annotations

from gatepass.errors import (
    AuthenticationFailed,
    InvalidToken,
    KeysUnavailable,
    RevocationsStale,
)
from gatepass.verifier.client import AsyncVerifier, VerifiedToken, Verifier
from gatepass.verifier.revocations import RevocationFeed, RevocationSource

__all__ = [
    "AsyncVerifier",
    "AuthenticationFailed",
    "InvalidToken",
    "KeysUnavailable",
    "RevocationFeed",
    "RevocationSource",
    "RevocationsStale",
    "VerifiedToken",
    "Verifier",
]
