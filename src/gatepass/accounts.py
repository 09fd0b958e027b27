"""Account operations: register, password login, sessions, logout, password change,
and the flows over mail (verification, reset, address change) and deletion.

This is policy, written against the store protocols; the HTTP server and the
framework integrations call it and only translate requests and responses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gatepass.account_mail import AccountMail
from gatepass.authenticator import BearerAuthenticator, Identity
from gatepass.clock import Clock
from gatepass.devices import DeviceCookies
from gatepass.emails import MAX_EMAIL_OCTETS, normalise_email
from gatepass.errors import (
    AuthenticationFailed,
    Conflict,
    CredentialsChanged,
    EmailNotVerified,
    EmailTaken,
    InvalidLink,
    InvalidRequest,
    NotFound,
    Overloaded,
    RateLimited,
    StoreError,
)
from gatepass.freshness import PWD, SignInProof, is_fresh, require_fresh
from gatepass.links import ADDRESS_PURPOSES, LinkPurpose, presented_digest
from gatepass.metrics import Metrics
from gatepass.passwords import (
    PasswordHasher,
    PasswordPolicyError,
    VerifyResult,
    normalise_password,
)
from gatepass.ratelimit import CredentialGuard, LoginThrottle, RequestLimits
from gatepass.refresh import RefreshTokens, TokenPair
from gatepass.revocation import RevocationView
from gatepass.second_factor import renew_proof
from gatepass.sessions import IssuedSession, SessionManager, SessionState, session_state
from gatepass.stores.base import Evicted, LinkRecord, Store, UserRecord

MAX_EMAIL_LENGTH = MAX_EMAIL_OCTETS  # kept for importers
DEFAULT_ROLES = ("user",)
#: GATEPASS_FRESH_AUTH_MAX_AGE's default (DESIGN §4).
DEFAULT_FRESH_AUTH_MAX_AGE = 300
#: GATEPASS_EMAIL_VERIFICATION values.
VERIFICATION_NONE, VERIFICATION_OPTIONAL, VERIFICATION_MANDATORY = "none", "optional", "mandatory"
INVALID_CREDENTIALS = "Invalid email or password."
WRONG_CURRENT_PASSWORD = "Current password is wrong."  # noqa: S105 - a message

audit = logging.getLogger("gatepass.audit")
logger = logging.getLogger("gatepass")


@dataclass(frozen=True, slots=True)
class SessionView:
    """A row of ``GET /auth/sessions``: public handle only, never a secret."""

    id: str
    kind: str
    created_at: float
    last_seen_at: float
    ip: str | None
    user_agent: str | None
    current: bool


class Accounts:
    """Account operations (register, login, sessions, logout, password change):
    policy over the store protocols, shared by the server and the integrations."""

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasher,
        sessions: SessionManager,
        refresh_tokens: RefreshTokens,
        revocations: RevocationView,
        bearer: BearerAuthenticator,
        devices: DeviceCookies,
        throttle: LoginThrottle,
        guard: CredentialGuard,
        metrics: Metrics,
        clock: Clock,
        *,
        max_sessions_per_user: int,
        mail: AccountMail,
        limits: RequestLimits,
        email_verification: str = VERIFICATION_OPTIONAL,
        fresh_auth_max_age: float = DEFAULT_FRESH_AUTH_MAX_AGE,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._sessions = sessions
        self._refresh = refresh_tokens
        self._revocations = revocations
        self._bearer = bearer
        self._devices = devices
        self._throttle = throttle
        self._guard = guard
        self._metrics = metrics
        self._clock = clock
        self._max_sessions = max_sessions_per_user
        self._mail = mail
        self._limits = limits
        self._verification = email_verification
        self._fresh_max_age = fresh_auth_max_age
        self._needs_second_factor: Callable[[str], Awaitable[bool]] = _no_second_factor

    async def register(
        self, email: str, password: str, *, ip: str | None = None
    ) -> UserRecord | None:
        """Create a user (role ``user``) and, unless verification is off, mail it a
        verification link.

        Every call counts toward the per-IP sign-up limit, whatever its outcome.
        Under mandatory verification a taken address is not an error: its owner is
        told by mail and ``None`` is returned, as for a new address, so the answer
        tells nobody which addresses have accounts. Otherwise a taken address is
        :class:`Conflict` (409).
        """
        await self._count(self._limits.count_registration(ip), "register_ip")
        email = _valid_email(email)
        _check_password_policy(password)
        # Hashed before the address is looked at: a taken address costs the same.
        password_hash = await self._hasher.hash(password)
        mandatory = self._verification == VERIFICATION_MANDATORY
        try:
            user = await self._store.create_user(email, password_hash, DEFAULT_ROLES, self._clock())
        except EmailTaken:
            if not mandatory:
                raise Conflict("That email is already registered.") from None
            self._mail.later(lambda: self._mail.notify_signup_existing(email), "sign-up notice")
            return None
        self._metrics.registrations.inc()
        if self._verification != VERIFICATION_NONE:
            created = user
            self._mail.later(
                lambda: self._mail.send_verification(created.id, created.email), "verification"
            )
        return None if mandatory else user

    async def _count(self, counting: Awaitable[None], limit: str) -> None:
        try:
            await counting
        except RateLimited:
            self._metrics.throttled_requests.labels(limit=limit).inc()
            raise

    async def verify_password_login(
        self, email: str, password: str, ip: str | None, *, device_cookie: str | None = None
    ) -> UserRecord:
        """Check a password login under the throttle. Unknown email and wrong password
        fail identically (same error, same time).

        ``device_cookie`` is the client's device cookie, if any: when it is genuine
        and bound to this account (:mod:`gatepass.devices`), the client is counted
        on its own, so a lockout made by guessing elsewhere does not refuse it.

        The user returned is as read *before* the password was checked: what the
        caller grants with it is stored only if the user's credentials have not
        changed since (:attr:`UserRecord.credential_version`).
        """
        account = self.account_key(email)
        device = self._devices.device_for(device_cookie, account)
        user: UserRecord | None = None

        async def find_user() -> str | None:
            nonlocal user
            user = await self._store.get_user_by_email(account) if account else None
            return user.password_hash if user else None

        async def forgive() -> bool:
            # A right password forgives the account's failures only when it signs
            # in alone: with a second factor, the wrong codes stay counted until
            # that factor is proven (else re-entering the password would reset
            # the count and allow endless code guessing).
            return user is None or not await self._needs_second_factor(user.id)

        result = await self._throttled_verify(
            account or email, ip, find_user, password, device, forgive=forgive
        )
        if not result.ok or user is None:
            self._metrics.logins.labels(result="failure").inc()
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        if self._verification == VERIFICATION_MANDATORY and not user.email_verified:
            # The password was right, but the address is unproven: nothing is
            # granted, and a fresh link goes out (within the mail limits).
            self._metrics.logins.labels(result="unverified").inc()
            if await self._limits.allow_mail_request(ip):
                unverified = user
                self._mail.later(
                    lambda: self._mail.send_verification(unverified.id, unverified.email),
                    "verification",
                )
            raise EmailNotVerified()
        self._metrics.logins.labels(result="success").inc()
        if result.needs_rehash:
            # Best effort: the password was right, so a full hashing queue or a busy
            # store must not turn the sign-in into a refusal; the next one rehashes.
            with contextlib.suppress(Overloaded, StoreError):
                await self._store.set_password_hash(
                    user.id, await self._hasher.hash(password), previous=user.password_hash
                )
        return user

    @staticmethod
    def account_key(email: str) -> str | None:
        """The normalised form an address is known by (uniqueness, lockout, device
        cookies), or ``None`` when it is not an address."""
        try:
            return normalise_email(email)
        except ValueError:
            return None

    async def _throttled_verify(
        self,
        account: str,
        ip: str | None,
        stored_hash: Callable[[], Awaitable[str | None]],
        password: str,
        device: str | None,
        *,
        forgive: Callable[[], Awaitable[bool]] | None = None,
    ) -> VerifyResult:
        """Verify ``password`` for ``account`` under the login throttle. A right
        password forgives the account's failures unless ``forgive`` says no.

        ``stored_hash`` is awaited inside the throttled section; ``None`` (no such
        account) costs a dummy verify, so both cases take the same time.
        """
        try:
            await self._throttle.check(account, ip, device)
        except RateLimited:
            self._metrics.throttled.inc()
            raise
        settled = False
        try:
            known = await stored_hash()
            if known is None:
                result = await self._hasher.dummy_verify(password)
            else:
                result = await self._hasher.verify(known, password)
            settled = True
            if result.ok and known is not None:
                if forgive is None or await forgive():
                    await self._throttle.record_success(account, device)
                else:
                    await self._throttle.abandon(account, device)
                return result
            if await self._throttle.record_failure(account, device):
                self._metrics.lockouts.inc()
            return VerifyResult(ok=False)
        finally:
            if not settled:
                # A store error, an overload or a cancelled request: the attempt
                # counted by check() is neither a failure nor a success.
                await self._throttle.abandon(account, device)

    async def start_web_session(
        self,
        user: UserRecord,
        *,
        presented_cookie: str | None,
        ip: str | None,
        user_agent: str | None,
        proof: SignInProof | None = None,
    ) -> IssuedSession:
        """A fresh session for ``user`` (as read before its password was checked);
        whatever session the request carried dies first, so an ID planted before
        login never becomes the victim's session. ``proof`` is how the user signed
        in (default: a password, now).

        Raises :class:`CredentialsChanged` when a password change or logout-all
        committed since ``user`` was read: nothing is granted.
        """
        if await self._sessions.destroy_cookie(presented_cookie):
            self._metrics.sessions_ended.inc()
        issued, evicted = await self._sessions.create(
            user,
            ip=ip,
            user_agent=user_agent,
            proof=proof or self.password_proof(),
            max_per_user=self._max_sessions,
            detail=INVALID_CREDENTIALS,
        )
        self._metrics.sessions_created.inc()
        await self._after_eviction(user, evicted)
        return issued

    async def start_token_family(
        self,
        user: UserRecord,
        *,
        ip: str | None,
        user_agent: str | None,
        proof: SignInProof | None = None,
    ) -> TokenPair:
        """A new refresh family and its first token pair (mobile and API clients),
        under the same guard as :meth:`start_web_session`."""
        pair, evicted = await self._refresh.start_family(
            user,
            ip=ip,
            user_agent=user_agent,
            proof=proof or self.password_proof(),
            limit=self._sessions.policy.limit(self._max_sessions),
            detail=INVALID_CREDENTIALS,
        )
        await self._after_eviction(user, evicted)
        return pair

    def use_second_factors(self, needs_second_factor: Callable[[str], Awaitable[bool]]) -> None:
        """How to tell whether a user's password must be followed by a second factor
        (set by :class:`~gatepass.core.Gatepass` once the factor modules exist)."""
        self._needs_second_factor = needs_second_factor

    async def check_may_sign_in(self, user: UserRecord) -> None:
        """Refuse a sign-in by any method for an address that must be verified first
        (mandatory verification), mailing it a fresh link within the limits."""
        if self._verification == VERIFICATION_MANDATORY and not user.email_verified:
            self._mail.later(
                lambda: self._mail.send_verification(user.id, user.email), "verification"
            )
            raise EmailNotVerified()

    def password_proof(self) -> SignInProof:
        """The proof of a password sign-in made now."""
        return SignInProof.now(self._clock(), PWD)

    async def require_fresh(self, identity: Identity) -> None:
        """Raise :class:`~gatepass.errors.ReauthenticationRequired` (403) unless the
        caller signed in (or reauthenticated) within ``GATEPASS_FRESH_AUTH_MAX_AGE``.

        A Bearer caller's family is read: a reauthentication renews the family's
        proof, not the access token the client already holds.
        """
        now = self._clock()
        auth_time = identity.auth_time
        if (
            identity.session is None
            and identity.family_id is not None
            and not is_fresh(auth_time, now, self._fresh_max_age)
        ):
            for family in await self._store.list_families(identity.user.id, now):
                if family.id == identity.family_id:
                    auth_time = max(auth_time, family.auth_time)
        require_fresh(auth_time, now, self._fresh_max_age)

    async def _after_eviction(self, user: UserRecord, evicted: Evicted) -> None:
        """Account for what a sign-in ended to stay within the per-user limit."""
        if not evicted:
            return
        for handle in (*evicted.sessions, *evicted.families):
            audit.info(
                "session limit: %s of user %s ended (oldest last seen) for a new sign-in",
                handle,
                user.id,
            )
        self._metrics.sessions_ended.inc(len(evicted.sessions))
        if evicted.families:
            self._metrics.revocations.labels(reason="session_limit").inc(len(evicted.families))
            await self._revocations.sync_quietly()

    async def logout(self, identity: Identity) -> None:
        """Cookie: end the session. Bearer: deny the token's jti and revoke its family."""
        if identity.session is not None and await self._sessions.destroy(identity.session):
            self._metrics.sessions_ended.inc()
        if (
            identity.token_id is not None
            and identity.token_expires_at is not None
            and identity.family_id is not None
        ):
            await self._store.revoke_token(
                identity.token_id,
                identity.token_expires_at,
                identity.family_id,
                identity.user.id,
                self._clock(),
            )
            self._metrics.revocations.labels(reason="logout").inc()
            await self._revocations.sync_quietly()

    async def logout_all(self, identity: Identity) -> None:
        """End every session and family; every access token issued before now fails,
        and a sign-in still checking a password for this user grants nothing."""
        ended, _ = await self._end_everything(identity.user)
        await self._revocations.sync_quietly()
        self._metrics.sessions_ended.inc(ended)
        self._metrics.revocations.labels(reason="logout_all").inc()

    async def _end_everything(
        self, user: UserRecord, *, password_hash: str | None = None, compare: bool = False
    ) -> tuple[int, int | None]:
        """Kill every credential of ``user``, in the order that fails closed (DESIGN §2),
        and, with ``password_hash``, set it. Return how many sessions ended and the
        new credential version (``None``: the user is gone).

        1. The sessions, with a version floor that refuses a sign-in in flight (on
           stores that keep sessions apart from the users, e.g. Redis);
        2. in one database transaction: the credential version and token epoch
           move, every refresh family is revoked, the new hash is set (``compare``:
           only if ``user.credential_version`` is still current, else
           :class:`CredentialsChanged` and nothing changed).

        A failure after step 1 leaves the user signed out everywhere and the
        password unchanged; a retry completes the job. When step 2 moved the
        version past the floor of step 1 (another change raced this one), the
        sessions are ended again under the final version.
        """
        floor = user.credential_version + 1
        ended = await self._store.end_user_sessions(user.id, min_credential_version=floor)
        try:
            version = await self._store.change_credentials(
                user.id,
                self._clock(),
                password_hash=password_hash,
                credential_version=user.credential_version if compare else None,
            )
            if version is not None and version != floor:
                ended += await self._store.end_user_sessions(
                    user.id, min_credential_version=version
                )
        finally:
            self._forget_user(user.id)
        if version is None and compare:
            raise CredentialsChanged()
        return ended, version

    def _forget_user(self, user_id: str) -> None:
        """Drop what this process cached about the user (sessions, the Bearer path's
        user record): every change to a user's credentials, roles or existence
        calls this."""
        self._sessions.forget(user_id=user_id)
        self._bearer.forget_user(user_id)

    async def list_sessions(self, identity: Identity) -> list[SessionView]:
        """Web sessions and token families of the caller; exactly one is ``current``."""
        current = identity.session.handle if identity.session else identity.family_id
        now = self._clock()
        web = [
            SessionView(
                id=r.handle,
                kind="web",
                created_at=r.created_at,
                last_seen_at=r.last_seen_at,
                ip=r.ip,
                user_agent=r.user_agent,
                current=r.handle == current,
            )
            for r in await self._store.list_sessions(identity.user.id)
            # Expired sessions are deleted when next presented; until then, hide them.
            if session_state(r, now, self._sessions.policy) is SessionState.VALID
        ]
        tokens = [
            SessionView(
                id=f.id,
                kind="token",
                created_at=f.created_at,
                last_seen_at=f.last_used_at,
                ip=f.ip,
                user_agent=f.user_agent,
                current=f.id == current,
            )
            for f in await self._store.list_families(identity.user.id, now)
        ]
        return sorted(web + tokens, key=lambda v: v.created_at)

    async def end_session(self, identity: Identity, handle: str) -> None:
        """End one of the caller's own sessions or token families; any other id is 404."""
        if await self._store.delete_session_by_handle(identity.user.id, handle):
            self._sessions.forget(handles=[handle])
            self._metrics.sessions_ended.inc()
            return
        if await self._store.revoke_family(handle, self._clock(), identity.user.id):
            await self._revocations.sync_quietly()
            self._metrics.revocations.labels(reason="family_deleted").inc()
            return
        raise NotFound("No such session.")

    async def verify_current_password(self, identity: Identity, password: str) -> UserRecord:
        """Check the caller's current password, against the store (never a cache).

        The account lockout made by others never refuses this: the caller's own
        wrong attempts count against its session or token family, which ends
        after ``GATEPASS_LOGIN_MAX_FAILURES`` of them. Returns the user as read
        before the check (its ``credential_version`` guards what follows).
        """
        credential = _credential_key(identity)
        user = await self._store.get_user(identity.user.id)
        if user is None:
            raise AuthenticationFailed()
        await self._guard.check(credential)
        settled = False
        try:
            result = await self._hasher.verify(user.password_hash, password)
            settled = True
        finally:
            if not settled:
                await self._guard.abandon(credential)
        if result.ok:
            await self._guard.record_success(credential)
            return user
        if await self._guard.record_failure(credential):
            await self.logout(identity)
            audit.warning(
                "too many wrong current passwords: %s of user %s ended", credential, user.id
            )
            self._metrics.revocations.labels(reason="wrong_current_password").inc()
        raise AuthenticationFailed(WRONG_CURRENT_PASSWORD)

    async def own_attempt(self, identity: Identity, attempt: Callable[[], Awaitable[bool]]) -> bool:
        """Run one guess by a signed-in caller (a code to reauthenticate or to remove a
        factor) under the same per-session or per-family count as wrong current
        passwords: after ``GATEPASS_LOGIN_MAX_FAILURES`` wrong ones the session or
        family is ended. Returns whether ``attempt`` succeeded."""
        credential = _credential_key(identity)
        await self._guard.check(credential)
        settled = False
        try:
            ok = await attempt()
            settled = True
        finally:
            if not settled:
                await self._guard.abandon(credential)
        if ok:
            await self._guard.record_success(credential)
            return True
        # Toward the account lockout as well, as every wrong code is (DESIGN §3.3);
        # the lockout itself never refuses a signed-in caller's own routes.
        if await self._throttle.record_failure(identity.user.email):
            self._metrics.lockouts.inc()
        if await self._guard.record_failure(credential):
            await self.logout(identity)
            audit.warning("too many wrong codes: %s of user %s ended", credential, identity.user.id)
            self._metrics.revocations.labels(reason="wrong_code").inc()
        return False

    async def reauthenticate(self, identity: Identity, current_password: str) -> None:
        """Renew ``auth_time`` of the caller's session or family after checking its
        current password (wrong ones count against that session or family). The
        session ID is kept: a reauthentication grants nothing the session lacked."""
        await self.verify_current_password(identity, current_password)
        await self.renew_sign_in(identity)

    async def renew_sign_in(self, identity: Identity) -> None:
        """Move ``auth_time`` of the caller's session or family to now (its ``amr`` and
        session ID kept), here and in every process's session cache."""
        await renew_proof(self._store, identity, self._clock())
        if identity.session is not None:
            # Cached copies hold the old auth_time: dropped here and, through the
            # bus, in the other processes.
            self._sessions.forget(id_hash=identity.session.id_hash)

    async def change_password(
        self, identity: Identity, current_password: str, new_password: str
    ) -> IssuedSession | None:
        """Set a new password, end every other session, and give the caller's session a
        new ID (returned). Bearer callers get ``None``: they hold no session.

        Raises :class:`CredentialsChanged` when another password change or a
        logout-all committed after the current password was checked.
        """
        _check_password_policy(new_password)
        user = await self.verify_current_password(identity, current_password)
        if identity.session is not None and user.credential_version != (
            identity.user.credential_version
        ):
            # The session was read (from a cache of up to a second) before a
            # logout-all or password change elsewhere: it must not be renewed.
            raise CredentialsChanged()
        new_hash = await self._hasher.hash(new_password)
        ended, version = await self._end_everything(user, password_hash=new_hash, compare=True)
        await self._revocations.sync_quietly()
        issued = None
        if identity.session is not None and version is not None:
            # Granted last: the caller's device under a new ID, for the new version
            # (refused if another change has moved it since: that one wins).
            issued = self._sessions.regenerated(identity.session)
            ended -= 1
            evicted = await self._store.insert_session(
                issued.record,
                credential_version=version,
                limit=self._sessions.policy.limit(self._max_sessions),
            )
            if evicted is None:
                raise CredentialsChanged()
        self._metrics.sessions_ended.inc(max(0, ended))
        return issued

    # mail flows: verification, reset, address change; deletion ------------------

    async def resend_verification(self, email: str, *, ip: str | None) -> None:
        """Mail a new verification link if ``email`` is a user's unverified address.
        The same outcome for every address (only the mail differs)."""
        await self._count(self._limits.count_mail_request(ip), "mail_ip")
        account = _valid_email(email)
        if self._verification == VERIFICATION_NONE:
            return

        async def resend() -> None:
            user = await self._store.get_user_by_email(account)
            if user is not None and not user.email_verified:
                await self._mail.send_verification(user.id, user.email)

        self._mail.later(resend, "verification resend")

    async def request_password_reset(self, email: str, *, ip: str | None) -> None:
        """Mail a reset link if ``email`` is a user's. The same outcome for every address,
        in the same time: what depends on the address runs after the answer."""
        await self._count(self._limits.count_mail_request(ip), "mail_ip")
        account = _valid_email(email)

        async def send() -> None:
            user = await self._store.get_user_by_email(account)
            if user is not None and await self._mail.send_reset(user.id, user.email):
                audit.info("password reset requested for user %s", user.id)
                self._metrics.account_events.labels(event="password_reset_requested").inc()

        self._mail.later(send, "password reset request")

    async def link_is_live(self, token: str, purpose: LinkPurpose) -> bool:
        """Whether ``token`` is a live link for ``purpose`` (read only: the pages ask
        before showing a form; using the link is what consumes it)."""
        return await self._live_link(token, _purposes(purpose), consume=False) is not None

    async def reset_password(self, token: str, new_password: str) -> None:
        """Set the password from a reset link, then end every session and family of
        the user, refuse every access token issued before now, and clear the
        account's lockout.

        A password the policy refuses is :class:`InvalidRequest` (422) and the link
        stays valid; anything but a live reset link is :class:`InvalidLink` (400).
        """
        purposes = (LinkPurpose.RESET_PASSWORD,)
        if await self._live_link(token, purposes, consume=False) is None:
            raise InvalidLink()
        _check_password_policy(new_password)
        new_hash = await self._hasher.hash(new_password)
        # Used only now, so a refused password or a full hashing queue leaves the
        # link valid; of two concurrent uses, one gets it.
        link = await self._live_link(token, purposes, consume=True)
        user = None if link is None else await self._store.get_user(link.user_id)
        if user is None or link is None or link.email != user.email:
            # Gone, or a link sent to an address the account has since left.
            raise InvalidLink()
        # Unconditional: a reset wins over whatever changed the user meanwhile. The
        # same transaction kills the user's other reset links.
        ended, _ = await self._end_everything(user, password_hash=new_hash)
        await self._revocations.sync_quietly()
        await self._clear_lockout(user.email)
        self._metrics.sessions_ended.inc(ended)
        self._metrics.revocations.labels(reason="password_reset").inc()
        self._metrics.account_events.labels(event="password_reset").inc()
        audit.info("password reset for user %s: every session and token family ended", user.id)

    async def verify_email(self, token: str) -> UserRecord:
        """Use a verification link (mark the address verified) or an address-change
        link (move the account to the new address, then tell the old one).
        Anything but a live link of those purposes is :class:`InvalidLink`."""
        link = await self._live_link(token, ADDRESS_PURPOSES, consume=True)
        if link is None:
            raise InvalidLink()
        if link.purpose == LinkPurpose.VERIFY_EMAIL:
            user = await self._store.mark_email_verified(link.user_id, link.email)
            self._forget_user(link.user_id)
            if user is None:  # the address changed since the link was sent
                raise InvalidLink()
            audit.info("address verified for user %s", user.id)
            self._metrics.account_events.labels(event="email_verified").inc()
            return user
        before = await self._store.get_user(link.user_id)
        if before is None:
            raise InvalidLink()
        try:
            user = await self._store.change_email(link.user_id, link.email)
        except EmailTaken:
            user = None  # registered by someone else since the link was sent
        finally:
            self._forget_user(link.user_id)
        if user is None:
            raise InvalidLink()
        await self._mail.notify_email_changed(before.email, user.email)
        audit.info("address changed for user %s", user.id)
        self._metrics.account_events.labels(event="email_changed").inc()
        return user

    async def request_email_change(
        self, identity: Identity, new_email: str, current_password: str, *, ip: str | None
    ) -> None:
        """Mail a link to ``new_email`` that moves the caller's account there when
        used. A taken address gets the same outcome; its owner is told by mail."""
        await self._count(self._limits.count_mail_request(ip), "mail_ip")
        new = _valid_email(new_email)
        user = await self.verify_current_password(identity, current_password)
        if new == user.email:
            return  # nothing to change, and nothing to tell

        async def send() -> None:
            if await self._store.get_user_by_email(new) is not None:
                await self._mail.notify_change_existing(new)
            elif await self._mail.send_change(user.id, new):
                audit.info("address change requested for user %s", user.id)
                self._metrics.account_events.labels(event="email_change_requested").inc()

        # After the answer: whether the new address is taken must not show in its time.
        self._mail.later(send, "address change request")

    async def delete_account(self, identity: Identity, current_password: str) -> None:
        """Delete the caller's account after checking its current password. Every
        session, family and access token dies at once, on every store, and the
        address is free to register again.

        Sessions go first (under a version floor that refuses a sign-in in flight),
        then the user with everything else in one transaction: a failure between
        leaves the user signed out everywhere, and a retry completes the job.
        """
        user = await self.verify_current_password(identity, current_password)
        floor = user.credential_version + 1
        try:
            ended = await self._store.end_user_sessions(user.id, min_credential_version=floor)
            await self._store.delete_user(user.id, self._clock())
        finally:
            self._forget_user(user.id)
        await self._revocations.sync_quietly()
        await self._clear_lockout(user.email)
        self._metrics.sessions_ended.inc(ended)
        self._metrics.revocations.labels(reason="account_deleted").inc()
        self._metrics.account_events.labels(event="account_deleted").inc()
        audit.info("account of user %s deleted with every credential", user.id)

    async def _clear_lockout(self, account: str) -> None:
        # After the change committed: an unreachable counter store must not turn
        # the done reset or deletion into an error (the lockout then just expires).
        try:
            await self._throttle.clear(account)
        except StoreError as exc:
            logger.warning("account lockout not cleared: %s", type(exc).__name__)

    async def _live_link(
        self, token: str, purposes: tuple[LinkPurpose, ...], *, consume: bool
    ) -> LinkRecord | None:
        digest = presented_digest(token)
        if digest is None:
            return None
        names = [purpose.value for purpose in purposes]
        if consume:
            return await self._store.consume_link(digest, names, self._clock())
        return await self._store.peek_link(digest, names, self._clock())


async def _no_second_factor(user_id: str) -> bool:
    return False


def _valid_email(email: str) -> str:
    """The normal form of ``email``, or :class:`InvalidRequest` (422) naming the rule."""
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _check_password_policy(password: str) -> None:
    try:
        normalise_password(password)
    except PasswordPolicyError as exc:
        raise InvalidRequest(str(exc)) from None


def _purposes(purpose: LinkPurpose) -> tuple[LinkPurpose, ...]:
    # The verification page takes address-change links as well.
    return ADDRESS_PURPOSES if purpose in ADDRESS_PURPOSES else (purpose,)


def _credential_key(identity: Identity) -> str:
    """What a caller's own wrong-password attempts are counted against."""
    if identity.session is not None:
        return f"session:{identity.session.handle}"
    return f"family:{identity.family_id}"
