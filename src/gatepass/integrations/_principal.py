"""The caller as every adapter hands it to the host app."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


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
