"""Prometheus counters, one registry per gatepass instance (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters gatepass exports on ``/metrics``, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.logins = Counter(
            "gatepass_logins",
            "Password logins by result.",
            ["result"],
            registry=self.registry,
        )
        self.lockouts = Counter(
            "gatepass_lockouts", "Accounts locked after repeated failures.", registry=self.registry
        )
        self.throttled = Counter(
            "gatepass_throttled_logins",
            "Login attempts refused by the account or IP limit.",
            registry=self.registry,
        )
        self.sessions_created = Counter(
            "gatepass_sessions_created", "Browser sessions created.", registry=self.registry
        )
        self.sessions_ended = Counter(
            "gatepass_sessions_ended", "Browser sessions ended.", registry=self.registry
        )
        self.registrations = Counter(
            "gatepass_registrations", "Users registered.", registry=self.registry
        )

        self.tokens_issued = Counter(
            "gatepass_access_tokens_issued", "Access tokens issued.", registry=self.registry
        )
        self.refreshes = Counter(
            "gatepass_refreshes", "Successful refresh-token rotations.", registry=self.registry
        )
        self.refresh_reuse = Counter(
            "gatepass_refresh_reuse_detections",
            "Rotated refresh tokens presented again (family revoked).",
            registry=self.registry,
        )
        self.revocations = Counter(
            "gatepass_token_revocations",
            "Access-token or family revocations by reason.",
            ["reason"],
            registry=self.registry,
        )
        # --- accounts and mail ------------------------------------------------------
        self.account_events = Counter(
            "gatepass_account_events",
            "Account events (email_verified, password_reset_requested, password_reset, "
            "email_change_requested, email_changed, account_deleted).",
            ["event"],
            registry=self.registry,
        )
        self.throttled_requests = Counter(
            "gatepass_throttled_requests",
            "Requests refused by a per-IP limit other than the login one (register, mail).",
            ["limit"],
            registry=self.registry,
        )
        self.mails = Counter(
            "gatepass_mails",
            "Outgoing mails by template and result (sent, failed, dropped: queue full, "
            "suppressed: over the per-address limit).",
            ["template", "result"],
            registry=self.registry,
        )
        # --- second factors -----------------------------------------------------------
        self.factor_events = Counter(
            "gatepass_factor_events",
            "Second-factor events by factor (totp, recovery_code, webauthn) and event "
            "(added, removed, used, failed, regenerated).",
            ["factor", "event"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
