"""The one constant-time comparison every secret check goes through."""

from __future__ import annotations

import hmac


def constant_time_equals(expected: str, presented: str) -> bool:
    """Compare two secrets without leaking, through timing, where they differ.

    Any string is accepted: lone surrogates and non-ASCII text compare as bytes.
    """
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )
