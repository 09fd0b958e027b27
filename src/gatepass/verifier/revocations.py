"""Revocations as a resource server learns them from the auth server."""

from __future__ import annotations

from typing import Protocol

from gatepass.tokens import AccessClaims


class RevocationSource(Protocol):
    """What a verifier asks about a token whose signature and claims passed."""

    def check(self, claims: AccessClaims) -> None:
        """Raise :class:`~gatepass.errors.InvalidToken` when the token was revoked, and
        :class:`~gatepass.errors.RevocationsStale` when this source cannot vouch that
        it knows every revocation up to its bound."""
        ...

    def close(self) -> None:
        """Stop whatever the source runs in the background."""
        ...
