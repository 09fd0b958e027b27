"""One-time links sent by mail: e-mail verification, password reset, e-mail change.

A link carries a 256-bit random token (DESIGN §3.2). Only its SHA-256 is stored,
with the purpose it was made for, the address it was sent to and when it expires,
so a copy of the database opens no link, and a token made for one purpose is
refused for any other. Tokens never reach a log line, a metric or an error.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from urllib.parse import quote

LINK_TOKEN_BYTES = 32
#: Longer input is no token of ours (``token_urlsafe(32)`` is 43 characters); it is
#: refused before it is hashed or sent to a store.
MAX_LINK_TOKEN_LENGTH = 128

VERIFY_EMAIL_PATH = "/verify-email"
RESET_PASSWORD_PATH = "/reset-password"  # noqa: S105 - a path, not a password


class LinkPurpose(enum.StrEnum):
    """What a link may be used for; stored with it and checked on use."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a password
    #: Sent to the new address of an e-mail change; used at the verification page.
    CHANGE_EMAIL = "change_email"


#: The purposes ``POST /auth/email/verify`` takes: a verification or an address change.
ADDRESS_PURPOSES = (LinkPurpose.VERIFY_EMAIL, LinkPurpose.CHANGE_EMAIL)


def new_link_token() -> str:
    """A fresh token for a link (URL-safe, 256 bits of randomness)."""
    return secrets.token_urlsafe(LINK_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What the store knows a link by: the SHA-256 of its token, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def presented_digest(text: str) -> str | None:
    """:func:`token_digest` of text a client presents as a token; ``None`` for text
    that cannot be one of ours (empty or too long), which finds nothing without a
    store read."""
    if not text or len(text) > MAX_LINK_TOKEN_LENGTH:
        return None
    return token_digest(text)


def link_url(public_url: str, purpose: LinkPurpose, token: str) -> str:
    """The link a mail carries: ``{public_url}/verify-email?token=T`` (verification and
    address change) or ``{public_url}/reset-password?token=T``."""
    path = RESET_PASSWORD_PATH if purpose is LinkPurpose.RESET_PASSWORD else VERIFY_EMAIL_PATH
    return f"{public_url}{path}?token={quote(token, safe='')}"


def describe_seconds(seconds: int) -> str:
    """A lifetime as mail text: "24 hours", "30 minutes", "1 day 2 hours"."""
    units = (("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1))
    parts: list[str] = []
    rest = seconds
    for name, size in units:
        count, rest = divmod(rest, size)
        if count and len(parts) < 2:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
        elif parts:
            break
    if parts == ["1 day"]:
        return "24 hours"
    return " ".join(parts) or "0 seconds"
