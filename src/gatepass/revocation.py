"""Revocation of access tokens, and Bearer authentication that honours it.

Three independent reasons kill an access token before its ``exp``:

* its ``jti`` is on the denylist (Bearer logout); entries expire with the token;
* its refresh family (``sid``) is revoked (logout, reuse, deletion, logout-all);
* it was issued before the user's *tokens valid after* epoch (logout-all,
  password change).

The epoch is compared in whole seconds (``iat`` is a whole number) so that a
token issued just *after* a logout-all in the same second stays valid; a token
issued just *before* it in that second is still refused, because logout-all
also revokes every family. All three facts come from one store read, by
primary key: the cost does not grow with the number of revoked tokens.
"""

from __future__ import annotations

import math

from gatepass.authenticator import Identity
from gatepass.stores.base import BearerState, TokenStore
from gatepass.tokens import AccessClaims, AccessTokens, InvalidToken


def check_not_revoked(claims: AccessClaims, state: BearerState) -> None:
    """Raise :class:`InvalidToken` when ``state`` says the token is dead. Pure."""
    if state.user is None:
        raise InvalidToken("user no longer exists")
    if state.jti_revoked:
        raise InvalidToken("token revoked")
    if not state.family_live:
        raise InvalidToken("family revoked")
    if claims.iat < math.floor(state.user.tokens_valid_after):
        raise InvalidToken("issued before the user's token epoch")


class BearerAuthenticator:
    """Verifies an access token and checks it against revocation state."""

    def __init__(self, tokens: AccessTokens, store: TokenStore) -> None:
        self._tokens = tokens
        self._store = store

    async def authenticate_bearer(self, token: str) -> Identity:
        claims = await self._tokens.verify(token)
        state = await self._store.bearer_state(claims.sub, claims.sid, claims.jti)
        check_not_revoked(claims, state)
        assert state.user is not None
        return Identity(
            user=state.user,
            method="bearer",
            token_id=claims.jti,
            family_id=claims.sid,
            token_expires_at=claims.exp,
        )
