"""The caller as every adapter hands it to the host app."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from gatepass.freshness import check_sign_in


class Principal(Protocol):
    """Who is calling: an :class:`~gatepass.authenticator.Identity` (embedded) or a
    :class:`gatepass.verifier.VerifiedToken` (resource server); role checks read
    ``roles`` and work on both."""

    @property
    def user_id(self) -> str: ...

    @property
    def roles(self) -> Collection[str]: ...

    @property
    def method(self) -> str: ...

    @property
    def auth_time(self) -> float:
        """When the user last proved who they are (``0``: unknown)."""
        ...

    @property
    def amr(self) -> tuple[str, ...]:
        """How (RFC 8176 values; ``mfa`` when two factors were used)."""
        ...


def check_principal(
    principal: Principal, now: float, *, max_age: float | None, second_factor: bool
) -> None:
    """:func:`gatepass.freshness.check_sign_in` for a principal of any adapter."""
    check_sign_in(
        principal.auth_time, principal.amr, now, max_age=max_age, second_factor=second_factor
    )
