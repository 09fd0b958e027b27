"""CSRF defence for cookie-authenticated requests.

Two independent checks, both required on state-changing methods:

* a synchronizer token, stored with the session and presented in the
  ``X-CSRF-Token`` header (or the ``csrf_token`` form field), compared in
  constant time;
* the ``Origin`` header, when the browser sends one, must be the server's own
  origin or an explicitly trusted one. ``null`` (sandboxed frames, some
  redirects) is never trusted.
"""

from __future__ import annotations

from collections.abc import Collection

from gatepass._compare import constant_time_equals
from gatepass.config import normalise_origin
from gatepass.errors import CSRFFailed

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "csrf_token"


def check_origin(origin: str | None, trusted: Collection[str]) -> None:
    """Refuse a request whose ``Origin`` is present and not trusted.

    ``trusted`` holds normalised origins (see :func:`gatepass.config.normalise_origin`).
    """
    if origin is None:
        return
    try:
        normalised = normalise_origin(origin)
    except ValueError:
        raise CSRFFailed("Origin not allowed.") from None
    if normalised not in trusted:
        raise CSRFFailed("Origin not allowed.")


def check_csrf_token(expected: str, presented: str | None) -> None:
    """Refuse unless ``presented`` equals the session's token."""
    if not presented or not constant_time_equals(expected, presented):
        raise CSRFFailed("Missing or invalid CSRF token.")
