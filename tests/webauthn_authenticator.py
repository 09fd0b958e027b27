"""A software WebAuthn authenticator and client, to drive real ceremonies in tests
without a browser.

It answers the options gatepass sends (the Level 3 JSON form) with the JSON form
of a ``PublicKeyCredential`` as ``toJSON()`` gives it: a ``none`` attestation on
an EC P-256 key for registration, an ES256 assertion over
``authenticatorData || SHA-256(clientDataJSON)`` for authentication. Each part a
browser or authenticator would fill in (origin, RP ID, challenge, counter, flags,
user handle) can be overridden, which is how tests play the attacker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40
_COSE_EC2, _COSE_ES256, _COSE_P256 = 2, -7, 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _options(options: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(options) if isinstance(options, str) else options


@dataclass
class SoftAuthenticator:
    """One passkey on a software authenticator (resident, with a counter)."""

    origin: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    #: The counter of the last signature; ``counter_step`` 0 makes it counterless.
    counter: int = 0
    counter_step: int = 1
    user_handle: bytes | None = None
    rp_id: str | None = None

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: _COSE_EC2,
                3: _COSE_ES256,
                -1: _COSE_P256,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _client_data(
        self, kind: str, challenge: str, origin: str | None, extra: dict[str, Any]
    ) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin, **extra}
        return json.dumps(data, separators=(",", ":")).encode()

    def create(
        self,
        options: str | dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        kind: str = "webauthn.create",
        user_verified: bool = True,
    ) -> dict[str, Any]:
        """``navigator.credentials.create()`` with these creation options."""
        opts = _options(options)
        self.rp_id = rp_id or opts["rp"]["id"]
        self.user_handle = unb64url(opts["user"]["id"])
        client_data = self._client_data(kind, challenge or opts["challenge"], origin, {})
        flags = FLAG_UP | FLAG_AT | (FLAG_UV if user_verified else 0)
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([flags])
            + self.counter.to_bytes(4, "big")
            + bytes(16)  # AAGUID: none given
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
        }

    def get(
        self,
        options: str | dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        kind: str = "webauthn.get",
        counter: int | None = None,
        user_verified: bool = True,
        user_present: bool = True,
        send_user_handle: bool = True,
        user_handle: bytes | None = None,
        client_data_extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``navigator.credentials.get()`` with these request options."""
        opts = _options(options)
        if counter is None:
            self.counter += self.counter_step
            counter = self.counter
        client_data = self._client_data(
            kind, challenge or opts["challenge"], origin, client_data_extra or {}
        )
        flags = (FLAG_UP if user_present else 0) | (FLAG_UV if user_verified else 0)
        rp = rp_id or opts.get("rpId") or self.rp_id or ""
        auth_data = (
            hashlib.sha256(rp.encode()).digest() + bytes([flags]) + counter.to_bytes(4, "big")
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        handle = user_handle if user_handle is not None else self.user_handle
        if send_user_handle and handle is not None:
            response["userHandle"] = b64url(handle)
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": response,
        }
