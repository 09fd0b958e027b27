"""WebAuthn passkeys (py_webauthn): registration, listing, renaming, removal, and
the verification of assertions for a passwordless sign-in, a second factor or a
reauthentication.

Options are the WebAuthn Level 3 JSON form (``options_to_json``), sent as the
whole response body. Every challenge is remembered server-side (as its SHA-256),
is single use, expires after :data:`CHALLENGE_TTL` seconds, and is bound to its
ceremony and, except for a passwordless sign-in, to its user. A client sends back
only the credential: its challenge is read from the ``clientDataJSON``.

An assertion is checked in one early-refusing sequence: shape, challenge
(consumed atomically first, so a challenge is used once however the rest goes),
known credential of the expected user, user handle, origin, RP ID hash, user
presence, signature, then the signature counter (stored only if it grew). Every
refusal is one :class:`~gatepass.errors.AuthenticationFailed` whose text does not
say which check failed; the reason goes to the audit log.

The WebAuthn user handle is 32 random bytes per user, stored beside the user's
passkeys: it names neither the gatepass user ID nor the address, so an
authenticator (or whoever reads it) learns nothing from it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from gatepass.clock import Clock
from gatepass.config import Settings
from gatepass.errors import (
    AuthenticationFailed,
    CredentialsChanged,
    DuplicateRecord,
    FieldProblem,
    InvalidRequest,
    NotFound,
)
from gatepass.metrics import Metrics
from gatepass.stores.base import (
    PasskeyRecord,
    PasskeyStore,
    UserRecord,
    WebAuthnChallengeRecord,
)
from gatepass.web import own_origins

audit = logging.getLogger("gatepass.audit")

#: Seconds a challenge lives (DESIGN §3.3).
CHALLENGE_TTL: Final = 300
CHALLENGE_BYTES: Final = 32
USER_HANDLE_BYTES: Final = 32
MAX_NAME_LENGTH: Final = 64
FACTOR: Final = "webauthn"

REGISTER: Final = "register"
#: A passwordless sign-in: no user is known before the assertion.
LOGIN: Final = "login"
#: A passkey as the second factor after a password; a reauthentication.
MFA: Final = "mfa"
REAUTH: Final = "reauth"
USER_CEREMONIES: Final = frozenset({MFA, REAUTH})

_REFUSED = "Passkey sign-in failed."
_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)


@dataclass(frozen=True)
class PasskeyView:
    """A passkey as its owner sees it: the public handle, name and times."""

    id: str
    name: str
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True)
class PasskeyAssertion:
    """A verified assertion: whose passkey signed it, and whether the authenticator
    verified the user (PIN, biometrics): a passwordless sign-in needs that."""

    user_id: str
    passkey_id: str
    user_verified: bool


class _Refused(Exception):
    """An assertion failed a check; ``reason`` is for the audit log only."""

    def __init__(self, reason: str, user_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id


def _view(record: PasskeyRecord) -> PasskeyView:
    return PasskeyView(record.id, record.name, record.created_at, record.last_used_at)


def _challenge_hash(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def _challenge_of(client_data_json: bytes) -> bytes:
    """The challenge of a credential's ``clientDataJSON``, read strictly: an object
    with string ``type``, ``challenge`` and ``origin``, not made inside a
    cross-origin frame (no page of ours embeds a ceremony in another site)."""
    data = json.loads(client_data_json)
    if not isinstance(data, dict):
        raise ValueError("clientDataJSON is not an object")
    for member in ("type", "challenge", "origin"):
        if not isinstance(data.get(member), str):
            raise ValueError(f"clientDataJSON.{member} is not a string")
    if data.get("crossOrigin") is True:
        raise ValueError("made in a cross-origin frame")
    challenge = data["challenge"]
    if not challenge or not all((c.isalnum() and c.isascii()) or c in "-_" for c in challenge):
        raise ValueError("challenge is not base64url")
    return base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4))


def check_name(name: str) -> str:
    """A passkey name as stored: surrounding white space dropped, then 1 to
    :data:`MAX_NAME_LENGTH` printable characters; :class:`InvalidRequest` (422)
    otherwise."""
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= MAX_NAME_LENGTH or not cleaned.isprintable():
        raise InvalidRequest(
            "Invalid passkey name.",
            problems=[FieldProblem("name", f"must be 1 to {MAX_NAME_LENGTH} printable characters")],
        )
    return cleaned


class Passkeys:
    """WebAuthn passkeys of the users of one deployment.

    The RP ID is :attr:`Settings.effective_webauthn_rp_id`; the expected origins
    are the server's own (:func:`gatepass.web.own_origins`: every loopback
    spelling of a loopback public URL, so ``http://localhost:PORT`` works with the
    RP ID ``localhost``), never ``GATEPASS_ALLOWED_ORIGINS``.
    """

    def __init__(
        self, store: PasskeyStore, settings: Settings, metrics: Metrics, clock: Clock
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self.rp_id = settings.effective_webauthn_rp_id
        self.origins = sorted(own_origins(settings))

    def __repr__(self) -> str:
        return f"Passkeys(rp_id={self.rp_id!r})"

    # challenges --------------------------------------------------------------

    async def _issue_challenge(self, ceremony: str, user_id: str | None) -> bytes:
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        await self._store.create_webauthn_challenge(
            WebAuthnChallengeRecord(
                challenge_hash=_challenge_hash(challenge),
                ceremony=ceremony,
                user_id=user_id,
                expires_at=self._clock() + CHALLENGE_TTL,
            )
        )
        return challenge

    async def _consume_challenge(
        self, challenge: bytes, ceremony: str, user_id: str | None
    ) -> bool:
        return await self._store.consume_webauthn_challenge(
            _challenge_hash(challenge), ceremony, user_id, self._clock()
        )

    # registration ------------------------------------------------------------

    async def registration_options(self, user: UserRecord) -> str:
        """Creation options (JSON text, the whole response body) for a new passkey of
        ``user``: a discoverable credential, user verification preferred, attestation
        ``none``, the user's passkeys excluded."""
        try:
            handle = await self._store.get_or_create_user_handle(
                user.id, lambda: secrets.token_bytes(USER_HANDLE_BYTES)
            )
        except DuplicateRecord:  # the user was deleted meanwhile
            raise CredentialsChanged() from None
        existing = await self._store.list_passkeys(user.id)
        challenge = await self._issue_challenge(REGISTER, user.id)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_id,
            user_name=user.email,
            user_id=handle,
            user_display_name=user.email,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=_descriptors(existing),
        )
        return options_to_json(options)

    async def register(
        self, user: UserRecord, credential: Mapping[str, Any], name: str | None = None
    ) -> PasskeyView:
        """Verify the attestation of a new passkey of ``user`` and store it.

        ``name`` defaults to "Passkey" and the date. :class:`InvalidRequest` 400 for
        a malformed credential, a challenge that is not a live registration
        challenge of this user, a wrong origin or RP ID, a failed attestation or a
        credential registered already; 422 for an invalid name.
        """
        now = self._clock()
        stored_name = (
            check_name(name)
            if name is not None
            else f"Passkey {datetime.fromtimestamp(now, UTC).date().isoformat()}"
        )
        try:
            parsed = _parse_registration(credential)
            challenge = _challenge_of(parsed.response.client_data_json)
        except Exception:
            raise _bad_registration("malformed credential", user.id) from None
        if not await self._consume_challenge(challenge, REGISTER, user.id):
            raise _bad_registration("not a live registration challenge of this user", user.id)
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                require_user_presence=True,
            )
        except Exception:
            raise _bad_registration("attestation refused", user.id) from None
        transports = tuple(t.value for t in parsed.response.transports or ())
        record = PasskeyRecord(
            id=secrets.token_urlsafe(16),
            user_id=user.id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            name=stored_name,
            created_at=now,
        )
        try:
            await self._store.add_passkey(record)
        except DuplicateRecord:
            raise _bad_registration("credential registered already", user.id) from None
        self._metrics.factor_events.labels(FACTOR, "added").inc()
        audit.info("passkey %s registered for user %s", record.id, user.id)
        return _view(record)

    # management --------------------------------------------------------------

    async def list(self, user_id: str) -> list[PasskeyView]:
        """The user's passkeys, oldest first."""
        return [_view(r) for r in await self._store.list_passkeys(user_id)]

    async def count(self, user_id: str) -> int:
        return await self._store.count_passkeys(user_id)

    async def rename(self, user_id: str, passkey_id: str, name: str) -> PasskeyView:
        """Rename one of the user's passkeys; :class:`NotFound` for any other ID."""
        record = await self._store.rename_passkey(user_id, passkey_id, check_name(name))
        if record is None:
            raise NotFound("No such passkey.")
        audit.info("passkey %s of user %s renamed", record.id, user_id)
        return _view(record)

    async def delete(self, user_id: str, passkey_id: str) -> None:
        """Remove one of the user's passkeys; :class:`NotFound` for any other ID."""
        if not await self._store.delete_passkey(user_id, passkey_id):
            raise NotFound("No such passkey.")
        self._metrics.factor_events.labels(FACTOR, "removed").inc()
        audit.info("passkey %s of user %s removed", passkey_id, user_id)

    # authentication ----------------------------------------------------------

    async def authentication_options(self, *, user_id: str | None, ceremony: str) -> str:
        """Request options (JSON text, the whole response body).

        ``login``: a passwordless sign-in (``user_id`` ``None``), no
        ``allowCredentials``, user verification required. ``mfa`` / ``reauth``:
        bound to ``user_id``, whose passkeys are the ``allowCredentials``.
        """
        _check_ceremony(ceremony, user_id)
        allowed: list[PublicKeyCredentialDescriptor] = []
        verification = UserVerificationRequirement.REQUIRED
        if user_id is not None:
            allowed = _descriptors(await self._store.list_passkeys(user_id))
            verification = UserVerificationRequirement.PREFERRED
        challenge = await self._issue_challenge(ceremony, user_id)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=CHALLENGE_TTL * 1000,
            allow_credentials=allowed,
            user_verification=verification,
        )
        return options_to_json(options)

    async def authenticate(
        self, credential: Mapping[str, Any], *, ceremony: str, user_id: str | None
    ) -> PasskeyAssertion:
        """Verify an assertion made for a challenge of ``ceremony`` (and of
        ``user_id`` for ``mfa`` / ``reauth``; ``None`` for ``login``).

        :class:`AuthenticationFailed` (one text) for anything wrong: malformed,
        challenge not issued, used, expired, of another ceremony or user, unknown
        credential or another user's, user handle, origin, RP ID, signature, or a
        signature counter that did not grow while either count is non-zero.
        """
        _check_ceremony(ceremony, user_id)
        try:
            assertion = await self._authenticate(credential, ceremony, user_id)
        except _Refused as refused:
            self._metrics.factor_events.labels(FACTOR, "failed").inc()
            audit.warning(
                "passkey assertion refused (%s) for %s of user %s",
                refused.reason,
                ceremony,
                refused.user_id or user_id or "unknown",
            )
            raise AuthenticationFailed(_REFUSED) from None
        self._metrics.factor_events.labels(FACTOR, "used").inc()
        audit.info(
            "passkey %s of user %s used for %s", assertion.passkey_id, assertion.user_id, ceremony
        )
        return assertion

    async def _authenticate(
        self, credential: Mapping[str, Any], ceremony: str, user_id: str | None
    ) -> PasskeyAssertion:
        try:
            parsed = _parse_authentication(credential)
            challenge = _challenge_of(parsed.response.client_data_json)
        except Exception:
            raise _Refused("malformed credential") from None
        if not await self._consume_challenge(challenge, ceremony, user_id):
            raise _Refused("not a live challenge of this ceremony and user")
        passkey = await self._store.get_passkey_by_credential_id(parsed.raw_id)
        if passkey is None:
            raise _Refused("unknown credential")
        if user_id is not None and passkey.user_id != user_id:
            raise _Refused(f"credential of another user ({passkey.user_id})")
        await self._check_user_handle(parsed, passkey, ceremony)
        try:
            # The counter is judged below, once the signature is known to be good
            # (an unsigned low counter is a forgery, not a sign of a clone): 0 here
            # turns off the library's own counter check.
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=0,
                require_user_verification=False,
            )
        except Exception:
            raise _Refused("origin, RP ID, user presence or signature", passkey.user_id) from None
        new_count = verified.new_sign_count
        grew = new_count > passkey.sign_count or new_count == passkey.sign_count == 0
        if not grew or not await self._store.record_passkey_use(
            passkey.id, new_count, self._clock()
        ):
            audit.warning(
                "passkey %s of user %s: signature counter %d did not grow past %d; "
                "possibly a cloned authenticator",
                passkey.id,
                passkey.user_id,
                new_count,
                passkey.sign_count,
            )
            raise _Refused("signature counter did not grow", passkey.user_id)
        return PasskeyAssertion(passkey.user_id, passkey.id, bool(verified.user_verified))

    async def _check_user_handle(
        self, parsed: AuthenticationCredential, passkey: PasskeyRecord, ceremony: str
    ) -> None:
        """A user handle sent must be the passkey owner's; a passwordless sign-in
        (no user known before) must send one (WebAuthn §7.2, step 6)."""
        sent = parsed.response.user_handle
        if sent is None:
            if ceremony == LOGIN:
                raise _Refused("no user handle", passkey.user_id)
            return
        owner = await self._store.get_user_handle(passkey.user_id)
        if owner is None or not secrets.compare_digest(sent, owner):
            raise _Refused("user handle is not the owner's", passkey.user_id)


def _check_ceremony(ceremony: str, user_id: str | None) -> None:
    # Programming errors of the caller, not the client's: they raise ValueError.
    if ceremony == LOGIN:
        if user_id is not None:
            raise ValueError("a passwordless sign-in has no user before the assertion")
    elif ceremony in USER_CEREMONIES:
        if user_id is None:
            raise ValueError(f"the {ceremony} ceremony needs the user")
    else:
        raise ValueError(f"unknown WebAuthn ceremony {ceremony!r}")


def _descriptors(records: Sequence[PasskeyRecord]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=r.credential_id,
            transports=[AuthenticatorTransport(t) for t in r.transports if t in _TRANSPORTS]
            or None,
        )
        for r in records
    ]


def _parse_registration(credential: Mapping[str, Any]) -> RegistrationCredential:
    if not isinstance(credential, Mapping):
        raise TypeError("credential is not an object")
    return parse_registration_credential_json(dict(credential))


def _parse_authentication(credential: Mapping[str, Any]) -> AuthenticationCredential:
    if not isinstance(credential, Mapping):
        raise TypeError("credential is not an object")
    return parse_authentication_credential_json(dict(credential))


def _bad_registration(reason: str, user_id: str) -> InvalidRequest:
    audit.warning("passkey registration refused (%s) for user %s", reason, user_id)
    return InvalidRequest("The passkey could not be registered.", status=400)
