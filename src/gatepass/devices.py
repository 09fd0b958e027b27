"""Device cookies: a device that has signed in to an account keeps signing in while
guessing from elsewhere has locked the account (OWASP "Slow Down Online
Guessing Attacks with Device Cookies").

A device cookie is issued only by a sign-in that granted a session or a token
pair. It names a random device ID and the account it is bound to (as a keyed
hash of the normalised address, so the cookie neither carries the address nor
lets its holder confirm a guessed one), signed with the session secrets (the
first signs, all verify) and timestamped, so it expires.
Presented with a sign-in for that same account, it lets the throttle count the
attempt against that device alone instead of against the account's untrusted
clients. A forged, expired or other account's cookie makes the client untrusted,
nothing worse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from itsdangerous import BadSignature, TimestampSigner

from gatepass._compare import constant_time_equals
from gatepass.clock import Clock

DEVICE_ID_BYTES = 16
#: How long a device stays trusted without signing in again (each sign-in renews it).
DEVICE_COOKIE_MAX_AGE = 180 * 86_400
#: A genuine device cookie is about 90 characters.
MAX_DEVICE_COOKIE_LENGTH = 256
_SALT = "gatepass.device-cookie"


_TAG_CONTEXT = b"gatepass.device-account\x00"
TAG_BYTES = 16


def _account_tag(secret: str, account: str) -> str:
    message = _TAG_CONTEXT + account.encode("utf-8", "surrogatepass")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _ClockedSigner(TimestampSigner):
    """itsdangerous' timestamped signer on an injected clock."""

    def __init__(self, secret_keys: Sequence[str], clock: Clock) -> None:
        super().__init__(
            list(secret_keys), salt=_SALT, key_derivation="hmac", digest_method=hashlib.sha256
        )
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class DeviceCookies:
    """Issues and checks device cookies bound to one account each."""

    def __init__(self, secrets_: Sequence[str], clock: Clock) -> None:
        if not secrets_:
            raise ValueError("at least one secret is required")
        self._secrets = tuple(secrets_)
        # itsdangerous signs with the *last* key; the setting lists the signing key first.
        self._signer = _ClockedSigner(list(reversed(secrets_)), clock)

    def __repr__(self) -> str:
        return "DeviceCookies(<secrets hidden>)"

    def issue(self, account: str) -> str:
        """A new device cookie value for the (normalised) ``account``."""
        device_id = secrets.token_urlsafe(DEVICE_ID_BYTES)
        tag = _account_tag(self._secrets[0], account)
        return self._signer.sign(f"{device_id}.{tag}").decode("ascii")

    def device_for(self, cookie_value: str | None, account: str | None) -> str | None:
        """The device ID in a genuine, unexpired cookie bound to ``account``, else ``None``."""
        if (
            not cookie_value
            or account is None
            or len(cookie_value) > MAX_DEVICE_COOKIE_LENGTH
            or not cookie_value.isascii()
        ):
            return None
        try:
            payload = self._signer.unsign(cookie_value, max_age=DEVICE_COOKIE_MAX_AGE)
        except (BadSignature, UnicodeDecodeError):
            return None
        device_id, _, tag = payload.decode("ascii").partition(".")
        bound = any(constant_time_equals(tag, _account_tag(s, account)) for s in self._secrets)
        return device_id if device_id and bound else None
