"""TOTP (RFC 6238) and recovery codes: the second factors kept in the database.

* **TOTP**: SHA-1, 6 digits, 30-second steps, the previous, current and next step
  accepted. A setup stays pending until a correct code confirms it. Every accepted
  code moves the user's last accepted step in the store, in one conditional write,
  so a code for that step or an earlier one is refused: a replay in the same
  window and two racing uses of one code both fail.
* **Secrets at rest**: sealed with AES-256-GCM under a key derived by HKDF-SHA256
  from each session secret of the deployment (the first seals, all open, so
  rotating ``GATEPASS_SESSION_SECRETS`` keeps them readable while the old secret is
  listed), a random 96-bit nonce per seal, the user ID as associated data (a
  sealed secret copied to another user's row does not open).
* **Recovery codes**: 10 per set, 50 random bits each (Crockford base32, shown as
  ``xxxxx-xxxxx``), returned once and stored only as HMAC-SHA256 under a key
  derived the same way, each deleted by its use, the whole set replaced by a new
  one.

Neither a secret nor a code reaches a log line, a metric label or an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatepass.clock import Clock
from gatepass.errors import Conflict, InvalidRequest
from gatepass.metrics import Metrics
from gatepass.stores.base import FactorStore, UserRecord

audit = logging.getLogger("gatepass.audit")
logger = logging.getLogger("gatepass")

TOTP_DIGITS = 6
TOTP_STEP_SECONDS = 30
#: Steps accepted on either side of the current one (clock skew, typing time).
TOTP_SKEW_STEPS = 1
RECOVERY_CODE_COUNT = 10
#: Crockford's base32: no I, L, O or U. On input, ``o`` reads as ``0`` and ``i``
#: and ``l`` as ``1``, so a misread code still works.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_CODE_LENGTH = 10
_RECOVERY_ALIASES = str.maketrans({"o": "0", "i": "1", "l": "1"})
#: Longer input is no code of either kind; it is refused before any work.
_MAX_CODE_INPUT = 64

_SEAL_INFO = b"gatepass totp secret v1"
_CODE_INFO = b"gatepass recovery code v1"
_SEAL_PREFIX = "v1."
_NONCE_BYTES = 12
_KEY_BYTES = 32


@dataclass(frozen=True)
class TotpSetup:
    """A new, pending TOTP factor as shown once to its user: the base32 ``secret``
    (unpadded, upper case), the ``otpauth://`` URI holding it, and that URI as an
    SVG QR code."""

    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


@dataclass(frozen=True)
class FactorSummary:
    """What second factors of this module a user holds."""

    totp: bool
    recovery_codes_left: int


def totp_code(text: str) -> str | None:
    """The six ASCII digits of a typed TOTP code (spaces and hyphens dropped), or
    ``None`` for anything else."""
    if len(text) > _MAX_CODE_INPUT:
        return None
    compact = text.replace(" ", "").replace("-", "")
    if len(compact) == TOTP_DIGITS and compact.isascii() and compact.isdigit():
        return compact
    return None


def recovery_code(text: str) -> str | None:
    """A typed recovery code in its normal form (lower case, no spaces or hyphens,
    misread letters mapped), or ``None`` when it cannot be one."""
    if len(text) > _MAX_CODE_INPUT:
        return None
    compact = text.replace(" ", "").replace("-", "")
    if not compact.isascii():
        return None
    compact = compact.lower().translate(_RECOVERY_ALIASES)
    if len(compact) == RECOVERY_CODE_LENGTH and all(c in RECOVERY_ALPHABET for c in compact):
        return compact
    return None


def _new_recovery_codes() -> list[str]:
    """A new set of distinct recovery codes, in their normal form."""
    codes: set[str] = set()
    while len(codes) < RECOVERY_CODE_COUNT:
        codes.add("".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH)))
    return sorted(codes)


def _shown(normal_code: str) -> str:
    """A recovery code as its user reads it: ``xxxxx-xxxxx``."""
    half = RECOVERY_CODE_LENGTH // 2
    return f"{normal_code[:half]}-{normal_code[half:]}"


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), _KEY_BYTES, None, info).derive(secret.encode())


class FactorKeys:
    """Keys derived from the deployment's session secrets: the first seals and
    hashes, all open and match (rotation)."""

    def __init__(self, session_secrets: Sequence[str]) -> None:
        if not session_secrets:
            raise ValueError("FactorKeys needs at least one session secret")
        self._seal = [AESGCM(_derive(s, _SEAL_INFO)) for s in session_secrets]
        self._code = [_derive(s, _CODE_INFO) for s in session_secrets]

    def __repr__(self) -> str:
        return "FactorKeys(...)"

    @staticmethod
    def _aad(user_id: str) -> bytes:
        return b"gatepass totp secret for " + user_id.encode()

    def seal(self, user_id: str, secret: str) -> str:
        """``secret`` encrypted for ``user_id``'s row, as text."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        body = self._seal[0].encrypt(nonce, secret.encode("ascii"), self._aad(user_id))
        return _SEAL_PREFIX + base64.urlsafe_b64encode(nonce + body).decode("ascii")

    def open(self, user_id: str, sealed: str) -> str | None:
        """The secret, or ``None`` when ``sealed`` is not a seal made for ``user_id``
        under one of the current secrets."""
        if not sealed.startswith(_SEAL_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :].encode("ascii"))
        except (binascii.Error, ValueError):
            return None
        nonce, body = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for cipher in self._seal:
            try:
                return cipher.decrypt(nonce, body, self._aad(user_id)).decode("ascii")
            except (InvalidTag, ValueError):
                continue
        return None

    def code_hashes(self, user_id: str, normal_code: str) -> list[str]:
        """The stored form of a recovery code under each key, the sealing key's first."""
        message = f"{user_id}:{normal_code}".encode()
        return [hmac.new(key, message, hashlib.sha256).hexdigest() for key in self._code]


class Factors:
    """TOTP and recovery codes of every user, over a :class:`FactorStore`.

    ``secrets``: the session secrets (first seals, all open); ``issuer_name``: the
    name authenticator apps show beside the account (the deployment's host).
    """

    def __init__(
        self,
        store: FactorStore,
        secrets: Sequence[str],
        metrics: Metrics,
        clock: Clock,
        *,
        issuer_name: str,
    ) -> None:
        if not issuer_name:
            raise ValueError("issuer_name must not be empty")
        self._store = store
        self._keys = FactorKeys(secrets)
        self._metrics = metrics
        self._clock = clock
        self._issuer = issuer_name

    def __repr__(self) -> str:
        return f"Factors(issuer_name={self._issuer!r})"

    # TOTP ------------------------------------------------------------------------

    async def begin_totp(self, user: UserRecord) -> TotpSetup:
        """A new TOTP secret for ``user``, pending until :meth:`confirm_totp`; it
        replaces a pending one. :class:`Conflict` (409) when TOTP is active already
        (it must be removed first)."""
        secret = pyotp.random_base32()
        sealed = self._keys.seal(user.id, secret)
        if not await self._store.save_pending_totp(user.id, sealed, self._clock()):
            raise Conflict("An authenticator app is set up already; remove it first.")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self._issuer)
        qr_svg = segno.make(uri, error="m").svg_inline(scale=4, title="TOTP set-up code")
        return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=qr_svg)

    async def confirm_totp(self, user_id: str, code: str) -> list[str]:
        """Activate the pending setup with a correct code and return a new set of
        recovery codes (shown once). :class:`InvalidRequest` (422) for a wrong or
        malformed code, or when no setup is pending."""
        record = await self._store.get_totp(user_id)
        if record is None or record.active:
            raise InvalidRequest("No authenticator app set-up is pending.")
        secret = self._keys.open(user_id, record.sealed_secret)
        digits = totp_code(code)
        step = None if secret is None or digits is None else self._matching_step(secret, digits)
        if step is None:
            raise InvalidRequest("Wrong code.")
        codes = _new_recovery_codes()
        if not await self._store.activate_totp(
            user_id, record.sealed_secret, step, self._stored_hashes(user_id, codes)
        ):
            # Replaced by a newer setup (or removed) meanwhile.
            raise InvalidRequest("No authenticator app set-up is pending.")
        audit.info("TOTP factor added for user %s, with new recovery codes", user_id)
        self._metrics.factor_events.labels(factor="totp", event="added").inc()
        return [_shown(code) for code in codes]

    async def remove_totp(self, user_id: str, code: str) -> None:
        """Remove the active TOTP factor and every recovery code, given a correct
        TOTP code or an unused recovery code (which it uses up). :class:`InvalidRequest`
        (422) otherwise, or when no TOTP is active."""
        if not await self.has_totp(user_id):
            raise InvalidRequest("No authenticator app is set up.")
        if totp_code(code) is not None:
            proven = await self.verify_totp(user_id, code)
        else:
            proven = await self.use_recovery_code(user_id, code)
        if not proven:
            raise InvalidRequest("Wrong code.")
        if await self._store.delete_totp(user_id):
            audit.info("TOTP factor removed for user %s, with its recovery codes", user_id)
            self._metrics.factor_events.labels(factor="totp", event="removed").inc()

    async def has_totp(self, user_id: str) -> bool:
        """Whether the user has an active TOTP factor (a pending setup is none)."""
        record = await self._store.get_totp(user_id)
        return record is not None and record.active

    async def verify_totp(self, user_id: str, code: str) -> bool:
        """Whether ``code`` is a correct code of the user's active TOTP for a step
        after the last accepted one; if so that step becomes the last accepted (of
        concurrent uses of one code, one is ``True``). Any text is safe to pass."""
        accepted = await self._verify_totp(user_id, code)
        event = "used" if accepted else "failed"
        audit.info("TOTP code %s for user %s", "accepted" if accepted else "refused", user_id)
        self._metrics.factor_events.labels(factor="totp", event=event).inc()
        return accepted

    async def _verify_totp(self, user_id: str, code: str) -> bool:
        digits = totp_code(code)
        if digits is None:
            return False
        record = await self._store.get_totp(user_id)
        if record is None or not record.active:
            return False
        secret = self._keys.open(user_id, record.sealed_secret)
        if secret is None:
            # Sealed under a session secret no longer configured (or moved rows).
            logger.warning(
                "the TOTP secret of user %s does not open with the session secrets", user_id
            )
            return False
        step = self._matching_step(secret, digits, after=record.last_step)
        return step is not None and await self._store.accept_totp_step(user_id, step)

    def _matching_step(self, secret: str, digits: str, *, after: int | None = None) -> int | None:
        """The latest step within the skew, after ``after``, whose code is ``digits``.

        Every candidate is compared (constant time), and the latest match wins, so a
        code that happens to fit two steps cannot be used twice.
        """
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
        current = int(self._clock() // TOTP_STEP_SECONDS)
        found = None
        for step in range(current - TOTP_SKEW_STEPS, current + TOTP_SKEW_STEPS + 1):
            matches = hmac.compare_digest(totp.generate_otp(step), digits)
            if matches and (after is None or step > after):
                found = step
        return found

    # recovery codes --------------------------------------------------------------

    async def regenerate_recovery_codes(self, user_id: str) -> list[str]:
        """A new set of recovery codes (shown once); the old ones die.
        :class:`Conflict` (409) when the user has no active TOTP (codes back it up)."""
        codes = _new_recovery_codes()
        if not await self._store.replace_recovery_codes(
            user_id, self._stored_hashes(user_id, codes)
        ):
            raise Conflict("Set up an authenticator app first.")
        audit.info("recovery codes regenerated for user %s", user_id)
        self._metrics.factor_events.labels(factor="recovery_code", event="regenerated").inc()
        return [_shown(code) for code in codes]

    async def use_recovery_code(self, user_id: str, code: str) -> bool:
        """Use up one of the user's recovery codes: ``True`` once per code (of
        concurrent uses, one). Any text is safe to pass."""
        normal = recovery_code(code)
        used = normal is not None and await self._store.consume_recovery_code(
            user_id, self._keys.code_hashes(user_id, normal)
        )
        if used:
            audit.info("recovery code used for user %s", user_id)
        else:
            audit.info("recovery code refused for user %s", user_id)
        event = "used" if used else "failed"
        self._metrics.factor_events.labels(factor="recovery_code", event=event).inc()
        return used

    async def summary(self, user_id: str) -> FactorSummary:
        """Whether TOTP is active and how many recovery codes are left."""
        return FactorSummary(
            totp=await self.has_totp(user_id),
            recovery_codes_left=await self._store.count_recovery_codes(user_id),
        )

    def _stored_hashes(self, user_id: str, normal_codes: Sequence[str]) -> list[str]:
        return [self._keys.code_hashes(user_id, code)[0] for code in normal_codes]
