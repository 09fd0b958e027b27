"""Account operations: register, password login, sessions, logout, password change.

This is policy, written against the store protocols; the HTTP server and the
framework integrations call it and only translate requests and responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gatepass.authenticator import Identity
from gatepass.clock import Clock
from gatepass.emails import normalise_email
from gatepass.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, RateLimited
from gatepass.metrics import Metrics
from gatepass.passwords import (
    PasswordHasher,
    PasswordPolicyError,
    VerifyResult,
    normalise_password,
)
from gatepass.ratelimit import LoginThrottle
from gatepass.refresh import RefreshTokens, TokenPair
from gatepass.revocation import RevocationView
from gatepass.sessions import IssuedSession, SessionManager, SessionState, session_state
from gatepass.stores.base import EmailTaken, SessionRecord, Store, UserRecord

MAX_EMAIL_LENGTH = 254
DEFAULT_ROLES = ("user",)
#: Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned.
_FORBIDDEN_EMAIL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
INVALID_CREDENTIALS = "Invalid email or password."


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
        throttle: LoginThrottle,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._sessions = sessions
        self._refresh = refresh_tokens
        self._revocations = revocations
        self._throttle = throttle
        self._metrics = metrics
        self._clock = clock

    async def register(self, email: str, password: str) -> UserRecord:
        try:
            email = normalise_email(email)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        try:
            normalise_password(password)
        except PasswordPolicyError as exc:
            raise InvalidRequest(str(exc)) from None
        password_hash = await self._hasher.hash(password)
        try:
            user = await self._store.create_user(email, password_hash, DEFAULT_ROLES, self._clock())
        except EmailTaken:
            raise Conflict("That email is already registered.") from None
        self._metrics.registrations.inc()
        return user

    async def verify_password_login(self, email: str, password: str, ip: str | None) -> UserRecord:
        """Check a password login under the throttle. Unknown email and wrong password
        fail identically (same error, same time)."""
        try:
            account = normalise_email(email)
        except ValueError:
            account = None
        user: UserRecord | None = None

        async def find_user() -> str | None:
            nonlocal user
            user = await self._store.get_user_by_email(account) if account else None
            return user.password_hash if user else None

        result = await self._throttled_verify(account or email, ip, find_user, password)
        if not result.ok or user is None:
            self._metrics.logins.labels(result="failure").inc()
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        self._metrics.logins.labels(result="success").inc()
        if result.needs_rehash:
            await self._store.set_password_hash(
                user.id, await self._hasher.hash(password), previous=user.password_hash
            )
        return user

    async def _throttled_verify(
        self,
        account: str,
        ip: str | None,
        stored_hash: Callable[[], Awaitable[str | None]],
        password: str,
    ) -> VerifyResult:
        """Verify ``password`` for ``account`` under the login throttle.

        ``stored_hash`` is awaited inside the throttled section; ``None`` (no such
        account) costs a dummy verify, so both cases take the same time.
        """
        try:
            self._throttle.check(account, ip)
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
                self._throttle.record_success(account)
                return result
            if self._throttle.record_failure(account):
                self._metrics.lockouts.inc()
            return VerifyResult(ok=False)
        finally:
            if not settled:
                # A store error or a cancelled request: the attempt counted by
                # check() is neither a failure nor a success.
                self._throttle.abandon(account)

    async def start_web_session(
        self,
        user: UserRecord,
        *,
        presented_cookie: str | None,
        ip: str | None,
        user_agent: str | None,
    ) -> IssuedSession:
        """A fresh session for ``user``; whatever session the request carried dies first,
        so an ID planted before login never becomes the victim's session."""
        if await self._sessions.destroy_cookie(presented_cookie):
            self._metrics.sessions_ended.inc()
        issued = await self._sessions.create(user.id, ip=ip, user_agent=user_agent)
        self._metrics.sessions_created.inc()
        return issued

    async def start_token_family(
        self, user: UserRecord, *, ip: str | None, user_agent: str | None
    ) -> TokenPair:
        """A new refresh family and its first token pair (mobile and API clients)."""
        return await self._refresh.start_family(user, ip=ip, user_agent=user_agent)

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
        """End every session and family; every access token issued before now fails."""
        ended, _ = await self._store.end_everything(identity.user.id, self._clock())
        self._sessions.forget(user_id=identity.user.id)
        await self._revocations.sync_quietly()
        self._metrics.sessions_ended.inc(ended)
        self._metrics.revocations.labels(reason="logout_all").inc()

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
            self._sessions.forget(handle=handle)
            self._metrics.sessions_ended.inc()
            return
        if await self._store.revoke_family(handle, self._clock(), identity.user.id):
            await self._revocations.sync_quietly()
            self._metrics.revocations.labels(reason="family_deleted").inc()
            return
        raise NotFound("No such session.")

    async def change_password(
        self,
        identity: Identity,
        current_password: str,
        new_password: str,
        *,
        ip: str | None = None,
    ) -> IssuedSession | None:
        """Set a new password, end every other session, and give the caller's session a
        new ID (returned). Bearer callers get ``None``: they hold no session.

        Wrong current passwords count against the account like failed logins, so a
        stolen session cannot be used to guess the password without limit.
        """
        try:
            normalise_password(new_password)
        except PasswordPolicyError as exc:
            raise InvalidRequest(str(exc)) from None

        async def stored_hash() -> str:
            return identity.user.password_hash

        result = await self._throttled_verify(
            identity.user.email, ip, stored_hash, current_password
        )
        if not result.ok:
            raise AuthenticationFailed("Current password is wrong.")
        new_hash = await self._hasher.hash(new_password)
        previous = await self._store.list_sessions(identity.user.id)
        issued = None
        replacement: SessionRecord | None = None
        if identity.session is not None:
            issued = self._sessions.regenerated(identity.session)
            replacement = issued.record
        await self._store.change_password(
            identity.user.id,
            new_hash,
            replacement=replacement,
            now=self._clock(),
        )
        self._sessions.forget(user_id=identity.user.id)
        await self._revocations.sync_quietly()
        ended = len(previous) - (1 if replacement is not None else 0)
        self._metrics.sessions_ended.inc(max(0, ended))
        return issued
