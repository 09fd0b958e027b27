"""Exceptions raised by gatepass.

Every exception gatepass raises on purpose derives from :class:`GatepassError`.
Messages are written for operators and logs; none of them carries a secret,
and the HTTP layer never copies them into a response body.

    GatepassError
    ├── ConfigError              bad or missing setting, raised at start-up
    ├── StoreUnavailable         a store could not be reached (fail closed: 503)
    ├── RequestError             the client sent something we refuse (4xx)
    │   ├── InvalidRequest       malformed or invalid input (400 / 422)
    │   │   └── PasswordPolicyError  a new password breaks the policy (422)
    │   ├── AuthenticationFailed no valid credential (401)
    │   ├── PermissionDenied     authenticated, but the request is not allowed (403)
    │   ├── CSRFFailed           missing or wrong CSRF token, foreign Origin (403)
    │   ├── NotFound             no such resource for this caller (404)
    │   ├── Conflict             e.g. an email already registered (409)
    │   └── RateLimited          too many attempts; carries ``retry_after`` (429)
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


class StoreUnavailable(GatepassError):
    """A backing store failed; callers must fail closed."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field of a request: where it is and what is wrong, never its value."""

    field: str
    message: str


class RequestError(GatepassError):
    """The client's request is refused. ``status`` is the HTTP status to answer with."""

    status: int = 400
    title: str = "Bad Request"

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


class PermissionDenied(RequestError):
    status = 403
    title = "Forbidden"


class CSRFFailed(PermissionDenied):
    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "CSRF check failed.")


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
