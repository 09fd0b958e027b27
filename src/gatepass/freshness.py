"""How and when a user last proved who they are: ``auth_time`` and ``amr``.

Every session and refresh family keeps the instant of the sign-in that made it
(``auth_time``, seconds since the epoch) and the methods that sign-in used
(``amr``, RFC 8176 values). Access tokens carry both as claims (RFC 9068
section 2.2.1), ``GET /auth/me`` shows them, and routes that change what
protects an account ask for a *fresh* sign-in: one within
``GATEPASS_FRESH_AUTH_MAX_AGE`` seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gatepass.errors import ReauthenticationRequired

#: RFC 8176 authentication method reference values gatepass records.
PWD = "pwd"  # noqa: S105 - a method name: a password was used
OTP = "otp"  # a one-time code (TOTP, a recovery code)
HWK = "hwk"  # proof of possession of a hardware-secured key (a passkey)
USER = "user"  # user presence and verification on the key (a PIN or a biometric)
MFA = "mfa"  # more than one factor
#: What an ``amr`` value stored or received may look like (RFC 8176 names are
#: short lower-case words); anything else is dropped, never trusted.
_AMR_VALUE = re.compile(r"[a-z]{2,16}")
MAX_AMR_VALUES = 8


@dataclass(frozen=True, slots=True)
class SignInProof:
    """When (``auth_time``, whole seconds) and how (``amr``) a user signed in."""

    auth_time: float
    amr: tuple[str, ...]

    @classmethod
    def now(cls, now: float, *methods: str) -> SignInProof:
        """A proof made at ``now`` by ``methods``; two factors or more add ``mfa``."""
        amr = tuple(dict.fromkeys(methods))
        if len(amr) > 1 and MFA not in amr:
            amr = (*amr, MFA)
        return cls(float(int(now)), amr)

    @property
    def has_second_factor(self) -> bool:
        return MFA in self.amr


#: No sign-in proof on record (rows and tokens from before they were kept, or a
#: credential made without one): never fresh.
UNKNOWN_PROOF = SignInProof(0.0, ())


def parse_amr(values: object) -> tuple[str, ...]:
    """An ``amr`` as stored or received (a list or a space-separated string), keeping
    only well-formed values."""
    if isinstance(values, str):
        values = values.split()
    if not isinstance(values, list | tuple):
        return ()
    return tuple(v for v in values if isinstance(v, str) and _AMR_VALUE.fullmatch(v))[
        :MAX_AMR_VALUES
    ]


def is_fresh(auth_time: float, now: float, max_age: float) -> bool:
    """Whether a sign-in at ``auth_time`` is within ``max_age`` seconds of ``now``."""
    return auth_time > 0 and now - auth_time <= max_age


def require_fresh(auth_time: float, now: float, max_age: float) -> None:
    """Raise :class:`ReauthenticationRequired` (403) unless the sign-in is fresh."""
    if not is_fresh(auth_time, now, max_age):
        raise ReauthenticationRequired()
