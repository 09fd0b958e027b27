"""The composition root: one :class:`Gatepass` wires settings, stores and policy."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Self
from urllib.parse import urlsplit

from gatepass.account_mail import AccountMail
from gatepass.accounts import Accounts
from gatepass.authenticator import Authenticator, BearerAuthenticator, NodeCaches
from gatepass.clock import Clock
from gatepass.config import Settings
from gatepass.devices import DeviceCookies
from gatepass.errors import StoreUnavailable
from gatepass.events import EventBus, LocalEventBus
from gatepass.keys import KeyRing, retired_key_retention
from gatepass.mail import Mailer
from gatepass.metrics import Metrics
from gatepass.mfa import Factors
from gatepass.passkeys import Passkeys
from gatepass.passwords import PasswordHasher
from gatepass.ratelimit import CredentialGuard, LoginThrottle, RequestLimits, throttle_counters
from gatepass.refresh import RefreshTokens, SuccessorSeal
from gatepass.revocation import RevocationView
from gatepass.second_factor import SecondFactors
from gatepass.sessions import SESSION_CACHE_SECONDS, CookieSigner, SessionManager, SessionPolicy
from gatepass.stores.base import CounterStore, Store
from gatepass.stores.factory import store_from_settings
from gatepass.stores.redis_events import RedisEventBus
from gatepass.stores.split import SplitStore
from gatepass.tokens import AccessTokens

logger = logging.getLogger("gatepass")
#: How often the auth server (and the adapters) delete expired sessions and families.
PRUNE_INTERVAL_SECONDS = 300

SESSION_SECRET_NAME = "session-secret-1"  # noqa: S105 - a row name, not a secret
THROTTLE_SECRET_NAME = "throttle-key-1"  # noqa: S105 - a row name, not a secret
GENERATED_SECRET_BYTES = 32


def _new_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


class Gatepass:
    """Everything one gatepass deployment needs, built from :class:`Settings`.

    Use :meth:`open` (async) to build one and :meth:`close` to release it.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        session_secrets: list[str],
        *,
        clock: Clock = time.time,
        hasher: PasswordHasher | None = None,
        counters: CounterStore | None = None,
        bus: EventBus | None = None,
        mailer: Mailer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        #: Tells the other processes what this one revoked or ended, and them this
        #: one (:mod:`gatepass.events`); started in :meth:`open`, closed in :meth:`close`.
        self.bus: EventBus = bus if bus is not None else LocalEventBus()
        self.metrics = Metrics()
        #: Outgoing mail (:mod:`gatepass.mail`); started in :meth:`open`, drained in :meth:`close`.
        self.mailer = mailer if mailer is not None else Mailer(settings, self.metrics)
        self.hasher = hasher or PasswordHasher(max_pending=settings.password_queue_limit)
        self.sessions = SessionManager(
            store,
            CookieSigner(session_secrets),
            SessionPolicy(settings.session_idle_timeout, settings.session_absolute_timeout),
            clock,
            # Sessions shared by many nodes are read each time, so an end on one
            # node holds on every other at once.
            cache_seconds=0.0 if isinstance(store, SplitStore) else SESSION_CACHE_SECONDS,
            bus=self.bus,
        )
        # Login and current-password counters: process memory unless a shared
        # store is given (DESIGN §2, "What lives where").
        self.counters = counters if counters is not None else throttle_counters(None)
        self.throttle = LoginThrottle(
            max_failures=settings.login_max_failures,
            lockout=settings.login_lockout,
            ip_limit=settings.login_ip_limit,
            clock=clock,
            counters=self.counters,
        )
        # A retired key stays published until every token it signed has expired,
        # counting a node that keeps signing with it until its next key reload.
        retention = retired_key_retention(settings.access_token_ttl, settings.leeway)
        self.keys = KeyRing(store, settings.jwt_algorithm, retention, clock)
        self.access_tokens = AccessTokens(
            self.keys,
            issuer=settings.effective_issuer,
            audience=settings.audience,
            ttl=settings.access_token_ttl,
            leeway=settings.leeway,
            clock=clock,
        )
        self.revocations = RevocationView(
            store, retention=settings.access_token_ttl + settings.leeway, clock=clock, bus=self.bus
        )
        self.refresh_tokens = RefreshTokens(
            store,
            self.access_tokens,
            self.revocations,
            ttl=settings.refresh_token_ttl,
            metrics=self.metrics,
            clock=clock,
            reuse_grace=settings.refresh_reuse_grace,
            seal=SuccessorSeal(session_secrets),
        )
        bearer = BearerAuthenticator(self.access_tokens, self.revocations, store, clock)
        self.bearer = bearer
        self.authenticator = Authenticator(self.sessions, bearer)
        self.caches = NodeCaches(self.revocations, bearer, self.sessions)
        self.devices = DeviceCookies(session_secrets, clock)
        # Sign-up and mail limits count beside the login throttle (memory or Redis).
        limits = RequestLimits(
            self.counters,
            clock,
            register_ip_limit=settings.register_ip_limit,
            mail_ip_limit=settings.mail_ip_limit,
            mail_address_limit=settings.mail_address_limit,
        )
        #: Links and notices of the account flows, over :attr:`mailer`.
        self.account_mail = AccountMail(
            store,
            self.mailer,
            limits,
            self.metrics,
            clock,
            public_url=settings.effective_public_url,
            verify_ttl=settings.email_verify_ttl,
            reset_ttl=settings.password_reset_ttl,
        )
        self.accounts = Accounts(
            store,
            self.hasher,
            self.sessions,
            self.refresh_tokens,
            self.revocations,
            bearer,
            self.devices,
            self.throttle,
            CredentialGuard(
                max_failures=settings.login_max_failures,
                # No session or family lives longer than this; nor need its count.
                retention=max(settings.session_absolute_timeout, settings.refresh_token_ttl),
                clock=clock,
                counters=self.counters,
            ),
            self.metrics,
            clock,
            max_sessions_per_user=settings.max_sessions_per_user,
            mail=self.account_mail,
            limits=limits,
            email_verification=settings.email_verification,
            fresh_auth_max_age=settings.fresh_auth_max_age,
        )
        #: TOTP and recovery codes; secrets sealed under the session secrets, the
        #: issuer authenticator apps show being the deployment's host.
        self.factors = Factors(
            store,
            session_secrets,
            self.metrics,
            clock,
            issuer_name=urlsplit(settings.effective_public_url).hostname or "gatepass",
        )
        #: WebAuthn passkeys: registration, management, assertions (:mod:`gatepass.passkeys`).
        self.passkeys = Passkeys(store, settings, self.metrics, clock)
        #: The pending second-factor step, passwordless passkeys, reauthentication.
        self.second_factors = SecondFactors(
            store,
            self.factors,
            self.passkeys,
            self.throttle,
            self.devices,
            self.metrics,
            clock,
            ttl=settings.mfa_token_ttl,
            renew=self.accounts.renew_sign_in,
            own_attempt=self.accounts.own_attempt,
        )
        self.accounts.use_second_factors(self.second_factors.required)

    def __repr__(self) -> str:
        return f"Gatepass(store={self.store!r})"

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock = time.time,
        hasher: PasswordHasher | None = None,
        store: Store | None = None,
        counters: CounterStore | None = None,
        bus: EventBus | None = None,
        mailer: Mailer | None = None,
    ) -> Self:
        """Start the store (migrating the embedded SQLite schema), load or generate
        secrets, load the key ring and the revocation feed.

        ``store`` replaces the one the settings name (an embedder's own, or one
        shared with other code); the instance starts it and closes it in
        :meth:`close`. ``counters`` replaces where the login throttle counts
        (:func:`gatepass.ratelimit.throttle_counters`; process memory by default),
        ``bus`` how this process hears of the others' revocations and session ends
        (default: :class:`~gatepass.events.LocalEventBus`), ``mailer`` how mail
        leaves (default: :class:`~gatepass.mail.Mailer` on the settings).
        """
        if store is None:
            store = store_from_settings(settings, clock=clock)
        try:
            await store.start()
            configured = [s.get_secret_value() for s in settings.session_secrets]
            session_secrets = configured or [
                await store.get_or_create_secret(SESSION_SECRET_NAME, _new_secret)
            ]
            if counters is None and isinstance(store, SplitStore):
                # Shared by every node: counter keys are named by an HMAC under a
                # secret of their own (rotating session secrets keeps the counts).
                key_secret = await store.get_or_create_secret(THROTTLE_SECRET_NAME, _new_secret)
                counters = throttle_counters(store.redis, key_secret=key_secret.encode())
            if bus is None and isinstance(store, SplitStore):
                # Revocations and session ends reach every node through Redis at once.
                bus = RedisEventBus(store.redis)
            instance = cls(
                settings,
                store,
                session_secrets,
                clock=clock,
                hasher=hasher,
                counters=counters,
                bus=bus,
                mailer=mailer,
            )
            await instance.keys.start()
            await instance.revocations.sync()
            await instance.hasher.warm_up()
            await instance.bus.start(instance.caches)
            # Last: nothing after it can fail, so it never needs stopping here.
            await instance.mailer.start()
        except BaseException:
            if bus is not None:
                await bus.close()
            await store.close()
            raise
        return instance

    async def prune(self) -> int:
        """Delete expired sessions and refresh families; return how many rows went.

        The auth server runs this every few minutes; an embedding application
        should call it now and then (nothing breaks without it: expired rows are
        refused anyway, they only take space).
        """
        return await self.store.prune_expired(
            self.clock(),
            session_idle=self.settings.session_idle_timeout,
            session_absolute=self.settings.session_absolute_timeout,
        )

    async def prune_forever(self, interval: float = PRUNE_INTERVAL_SECONDS) -> None:
        """:meth:`prune` every ``interval`` seconds until cancelled (the auth server
        and the adapters run this as a task beside the app)."""
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.prune()
            except StoreUnavailable as exc:
                logger.warning("pruning expired rows failed: %s", exc)
            except Exception:
                # Pruning only frees space; whatever went wrong, the next round tries
                # again rather than the task dying unnoticed.
                logger.exception("pruning expired rows failed")
            else:
                logger.debug("pruned %d expired rows", removed)

    async def close(self) -> None:
        """Send queued mail (briefly), then release the event bus, the database
        connections and the hashing threads."""
        # Account mail work still running (look-ups, links) hands its mail over first.
        await self.account_mail.settle()
        await self.mailer.close()
        await self.bus.close()
        await self.store.close()
        self.hasher.close()
