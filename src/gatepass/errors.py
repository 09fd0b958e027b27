"""Exceptions raised by gatepass.

Every exception gatepass raises on purpose derives from :class:`GatepassError`.
Messages are written for operators and logs; none of them carries a secret,
and the HTTP layer never copies them into a response body.

    GatepassError
    ├── ConfigError                  bad or missing setting, raised at start-up
    ├── StoreError                   raised by stores, mapped from driver errors in one place
    │   ├── StoreUnavailable         a store could not be reached (fail closed: 503)
    │   │   ├── KeysUnavailable      a verifier holds no signing keys it may still trust
    │   │   └── RevocationsStale     a verifier's revocation feed is older than its bound
    │   └── DuplicateRecord          a write broke a uniqueness rule
    │       └── EmailTaken           a user with this (normalised) email exists
    ├── Overloaded                   password hashing is saturated (503 + ``retry_after``)
    └── RequestError                 the client sent something we refuse (4xx)
        ├── InvalidRequest           malformed or invalid input (400 / 422)
        │   └── PasswordPolicyError  a new password breaks the policy (422)
        ├── PayloadTooLarge          body over the limit (413)
        ├── UnsupportedMediaType     body of a type we do not read (415)
        ├── AuthenticationFailed     no valid credential (401)
        │   ├── InvalidToken         an access token was refused (``reason`` for logs)
        │   │   └── UnknownSigningKey    its ``kid`` names no key we hold (yet)
        │   ├── InvalidRefreshToken  not a live refresh token
        │   └── CredentialsChanged   a password change or logout-all won a race with this
        ├── PermissionDenied         authenticated, but the request is not allowed (403)
        │   ├── CSRFFailed           missing or wrong CSRF token, foreign Origin (403)
        │   ├── EmailNotVerified     sign-in of an unverified address under mandatory verification
        │   └── ReauthenticationRequired  the sign-in is not fresh enough for this change
        ├── InvalidLink              not a live mail-link token for this purpose (400)
        ├── NotFound                 no such resource for this caller (404)
        ├── Conflict                 e.g. an email already registered (409)
        └── RateLimited              too many attempts; carries ``retry_after`` (429)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class GatepassError(Exception):
    """Root of every exception gatepass raises on purpose."""


class ConfigError(GatepassError, ValueError):
    """A setting is invalid. ``setting`` names it (e.g. ``GATEPASS_LEEWAY``)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class StoreError(GatepassError):
    """Raised by a store. Driver exceptions are translated into these at the store's
    one transaction boundary, so nothing above the stores sees a driver type."""


class StoreUnavailable(StoreError):
    """A backing store failed; callers must fail closed. ``store`` names it
    (``"database"``, ``"redis"``) where known, for ``/healthz`` and operators."""

    def __init__(self, message: str = "", *, store: str | None = None) -> None:
        super().__init__(message)
        self.store = store


class KeysUnavailable(StoreUnavailable):
    """A verifier could not fetch the issuer's JWKS and its last good key set is past
    the stale limit: it refuses every token rather than trust keys it cannot check."""


class RevocationsStale(StoreUnavailable):
    """A verifier's revocation feed has not been heard from within its bound: a
    revoked token might pass, so none does until the feed is current again."""


class DuplicateRecord(StoreError):
    """A write would break a uniqueness rule (the record exists already)."""


class EmailTaken(DuplicateRecord):
    """A user with this (normalised) email already exists."""


class Overloaded(GatepassError):
    """Password hashing is saturated: the request is refused at once (503) instead of
    queueing behind the others. ``retry_after`` is in whole seconds."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("password hashing is saturated")
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field of a request: where it is and what is wrong, never its value."""

    field: str
    message: str


class RequestError(GatepassError):
    """The client's request is refused. ``status`` is the HTTP status to answer with."""

    status: int = 400
    title: str = "Bad Request"
    #: A stable, machine-readable reason a client can act on (problem+json ``code``),
    #: for refusals whose status alone is ambiguous; ``None``: none is sent.
    code: str | None = None

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class InvalidRequest(RequestError):
    """Malformed body (400) or invalid fields (422, with ``problems``)."""

    def __init__(
        self,
        detail: str,
        *,
        status: int = 422,
        problems: Sequence[FieldProblem] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = "Bad Request" if status == 400 else "Unprocessable Content"
        self.problems = tuple(problems)


class PasswordPolicyError(InvalidRequest, ValueError):
    """A new password breaks the policy (length, white space, common, encoding).

    The message names the rule, never the password. Also a :class:`ValueError`,
    as it was before it joined this hierarchy.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail, status=422)


class PayloadTooLarge(RequestError):
    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(RequestError):
    status = 415
    title = "Unsupported Media Type"


class AuthenticationFailed(RequestError):
    """No valid credential. ``token_sent`` is set when a Bearer token was presented."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str | None = None, *, token_sent: bool = False) -> None:
        super().__init__(detail or "Authentication required.")
        self.token_sent = token_sent


class InvalidToken(AuthenticationFailed):
    """An access token was refused. ``reason`` is for logs and metrics only."""

    def __init__(self, reason: str) -> None:
        super().__init__("Invalid access token.", token_sent=True)
        self.reason = reason


class UnknownSigningKey(InvalidToken):
    """The token's header passed, but its ``kid`` names no key this process holds.

    Whoever holds the keys may fetch them again (at a bounded rate) and retry once;
    ``kid`` is the attacker's text, so it is for that look-up only, never for a log.
    """

    def __init__(self, kid: str) -> None:
        super().__init__("unknown kid")
        self.kid = kid


class InvalidRefreshToken(AuthenticationFailed):
    """A string that is not a live refresh token (unknown, rotated, revoked, expired)."""

    def __init__(self) -> None:
        super().__init__("Invalid refresh token.")


class CredentialsChanged(AuthenticationFailed):
    """The user's credentials were replaced or ended (password change, logout-all)
    while this request was checking them: it grants and changes nothing."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Credentials changed meanwhile; sign in again.")


class PermissionDenied(RequestError):
    status = 403
    title = "Forbidden"


class CSRFFailed(PermissionDenied):
    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "CSRF check failed.")


class EmailNotVerified(PermissionDenied):
    """A password sign-in of an unverified address while verification is mandatory:
    nothing is granted (a fresh link is mailed, within the mail limits)."""

    code = "email_not_verified"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Verify your e-mail address first; we sent you a link.")


class ReauthenticationRequired(PermissionDenied):
    """The caller's sign-in is older than ``GATEPASS_FRESH_AUTH_MAX_AGE``: sign in
    again or ``POST /auth/reauthenticate`` first."""

    code = "reauthentication_required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Sign in again to do this.")


class InvalidLink(RequestError):
    """Text that is not a live link token for this purpose: unknown, used, expired,
    made for another purpose, or of any other shape. One answer for all of them."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "This link is invalid, expired or already used.")


class NotFound(RequestError):
    status = 404
    title = "Not Found"


class Conflict(RequestError):
    status = 409
    title = "Conflict"


class RateLimited(RequestError):
    """Too many attempts; retry after ``retry_after`` whole seconds."""

    status = 429
    title = "Too Many Requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail or "Too many attempts. Try again later.")
        self.retry_after = max(1, retry_after)
