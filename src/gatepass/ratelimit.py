"""Login throttling: per account (lockout), per trusted device, per client network,
and wrong current passwords per session.

*Account*: after ``max_failures`` failed logins within ``lockout`` seconds, the
account is locked for ``lockout`` seconds against *untrusted* clients; every
attempt from one meanwhile, a correct password included, is refused with the
time left. Unknown emails are counted exactly like real ones, so lockouts do
not reveal which accounts exist.

*Device*: a client that presents a device cookie for the account (one that
signed in there before, OWASP "device cookies") is counted on its own: the
account's lockout does not refuse it, so guessing from elsewhere cannot lock the
owner out, and its own failures lock only that device.

Sign-ups and mail are limited by :class:`RequestLimits` over the same counters.

*IP*: at most ``ip_limit`` attempts per ``ip_window`` seconds from one client
address, successful or not. IPv6 clients are counted per /64, the block a single
subscriber is usually given, so rotating through one's own addresses buys nothing.

The counters live behind :class:`~gatepass.stores.base.CounterStore`: process
memory by default (:mod:`gatepass.stores.memory_counters`, bounded in size), or a
Redis shared by every node and worker (:mod:`gatepass.stores.redis_counters`),
picked by :func:`throttle_counters`. The policy here is the same for both; a
backend that cannot be reached raises
:class:`~gatepass.errors.StoreUnavailable` from :meth:`LoginThrottle.check`, so
no login is let through unthrottled.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
from collections.abc import Iterator

from gatepass.clock import Clock
from gatepass.errors import RateLimited, StoreUnavailable
from gatepass.stores.base import CounterStore, GuardCounters, LoginCounters
from gatepass.stores.memory_counters import MAX_TRACKED_KEYS as MAX_TRACKED_KEYS
from gatepass.stores.memory_counters import MemoryCounters
from gatepass.stores.redis_connection import RedisClient
from gatepass.stores.redis_counters import RedisCounters

IP_WINDOW_SECONDS = 300
#: IPv6 addresses are counted per network of this prefix length.
IPV6_PREFIX = 64

logger = logging.getLogger("gatepass")


def throttle_counters(redis: RedisClient | None, *, key_secret: bytes = b"") -> CounterStore:
    """Where the throttle counters live: ``redis`` when given (shared by every node
    and worker, keys named by an HMAC under ``key_secret``, which every node must
    share), else this process's memory (the embedded default)."""
    if redis is None:
        return MemoryCounters()
    return RedisCounters(redis, key_secret=key_secret)


def ip_key(ip: str) -> str:
    """What the per-IP limit counts: the address, or its /64 for IPv6.

    An IPv4-mapped IPv6 address counts as its IPv4 address. A peer that is not
    an IP address (a Unix socket, a test client) counts as itself.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class LoginThrottle:
    """Account and device lockout and per-IP rate limit for password logins.

    ``device`` arguments are the verified ID of a device cookie bound to the
    account (see :mod:`gatepass.devices`), or ``None`` for an untrusted client.
    ``counters`` holds the state (process memory of at most ``max_keys`` entries
    per table unless given).
    """

    def __init__(
        self,
        *,
        max_failures: int,
        lockout: float,
        ip_limit: int,
        clock: Clock,
        ip_window: float = IP_WINDOW_SECONDS,
        max_keys: int = MAX_TRACKED_KEYS,
        counters: LoginCounters | None = None,
    ) -> None:
        if max_failures < 1 or ip_limit < 1 or lockout <= 0 or ip_window <= 0:
            raise ValueError("throttle limits must be positive")
        self._max_failures = max_failures
        self._lockout = lockout
        self._ip_limit = ip_limit
        self._ip_window = ip_window
        self._clock = clock
        self._counters = counters if counters is not None else MemoryCounters(max_keys=max_keys)

    async def check(self, account: str, ip: str | None, device: str | None = None) -> None:
        """Count this attempt against ``ip`` and the account (or the trusted device),
        or raise :class:`RateLimited`.

        Every attempt let through must be settled by :meth:`record_failure`,
        :meth:`record_success` or :meth:`abandon` with the same ``device``.
        Attempts still in flight count against the lockout, so parallel guesses
        cannot slip past it. Raises :class:`StoreUnavailable` (nothing let
        through) when the counters cannot be reached.
        """
        now = self._clock()
        if ip is not None:
            wait = await self._counters.count_attempt(
                ip_key(ip), now, limit=self._ip_limit, window=self._ip_window
            )
            if wait > 0:
                raise RateLimited(_whole_seconds(wait))
        refused = await self._counters.begin_login(
            _key(account, device), now, max_failures=self._max_failures, window=self._lockout
        )
        if refused is not None:
            raise RateLimited(_whole_seconds(refused))

    async def count_ip(self, ip: str | None) -> None:
        """Count a sign-in attempt that names no account (a passwordless passkey
        sign-in) against ``ip``'s login limit, or raise :class:`RateLimited`."""
        if ip is None:
            return
        wait = await self._counters.count_attempt(
            ip_key(ip), self._clock(), limit=self._ip_limit, window=self._ip_window
        )
        if wait > 0:
            raise RateLimited(_whole_seconds(wait))

    async def record_failure(self, account: str, device: str | None = None) -> bool:
        """Count a failed login; return ``True`` when it locks the account (or device)."""
        return await self._counters.fail_login(
            _key(account, device),
            self._clock(),
            max_failures=self._max_failures,
            window=self._lockout,
        )

    async def record_success(self, account: str, device: str | None = None) -> None:
        """A correct password: the failures of this account (or device) are forgiven.

        A trusted device's success forgives only that device: the untrusted
        clients guessing meanwhile stay counted.
        """
        await self._counters.forget_login(_key(account, device))

    async def abandon(self, account: str, device: str | None = None) -> None:
        """Settle an attempt that ended in neither success nor failure (an error).

        An unreachable store is not raised here: the attempt then keeps counting
        until the store drops it (never less throttling), and the error that
        ended the attempt is the one the caller sees.
        """
        with _quietly("abandon"):
            await self._counters.abandon_login(_key(account, device))

    async def clear(self, account: str) -> None:
        """Forget every count of the untrusted clients of ``account`` (e.g. after a reset)."""
        await self._counters.forget_login(_key(account, None))


#: DESIGN §4: registrations per client IP per hour; mail requests and mails per 900 s.
REGISTER_WINDOW_SECONDS = 3600
MAIL_WINDOW_SECONDS = 900


class RequestLimits:
    """Sign-up and mail limits: registrations and mail-triggering requests per client
    IP (429), and mails per address (beyond it a mail is silently not sent, so the
    answer tells nothing). They share the throttle's counters (memory or Redis);
    each limit counts under a prefix of its own, so none eats another's budget.
    """

    def __init__(
        self,
        counters: LoginCounters,
        clock: Clock,
        *,
        register_ip_limit: int,
        mail_ip_limit: int,
        mail_address_limit: int,
    ) -> None:
        if min(register_ip_limit, mail_ip_limit, mail_address_limit) < 1:
            raise ValueError("request limits must be positive")
        self._counters = counters
        self._clock = clock
        self._register_ip_limit = register_ip_limit
        self._mail_ip_limit = mail_ip_limit
        self._mail_address_limit = mail_address_limit

    async def count_registration(self, ip: str | None) -> None:
        """Count a registration from ``ip``, or raise :class:`RateLimited`."""
        await self._count_ip("register", ip, self._register_ip_limit, REGISTER_WINDOW_SECONDS)

    async def count_mail_request(self, ip: str | None) -> None:
        """Count a mail-triggering request from ``ip``, or raise :class:`RateLimited`."""
        await self._count_ip("mail-ip", ip, self._mail_ip_limit, MAIL_WINDOW_SECONDS)

    async def allow_mail_request(self, ip: str | None) -> bool:
        """Count a mail a request causes as a side effect (a sign-in of an unverified
        address); ``False``: over the mail IP limit, send nothing (the request is not
        refused for it)."""
        try:
            await self.count_mail_request(ip)
        except RateLimited:
            return False
        return True

    async def allow_mail_to(self, address: str) -> bool:
        """Count one mail to ``address`` (normalised); ``False``: over the limit, send
        nothing. The counter key is a digest: the counters never hold an address."""
        digest = hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()
        wait = await self._counters.count_attempt(
            f"mail-to:{digest}",
            self._clock(),
            limit=self._mail_address_limit,
            window=MAIL_WINDOW_SECONDS,
        )
        return wait <= 0

    async def _count_ip(self, prefix: str, ip: str | None, limit: int, window: float) -> None:
        if ip is None:  # no peer address (an embedder's own call): nothing to count by
            return
        wait = await self._counters.count_attempt(
            f"{prefix}:{ip_key(ip)}", self._clock(), limit=limit, window=window
        )
        if wait > 0:
            raise RateLimited(_whole_seconds(wait))


class CredentialGuard:
    """Wrong current passwords on authenticated routes, counted per session or family.

    Routes that ask a signed-in caller for the current password (password change,
    later e-mail change, deletion, reauthentication) are never refused because of
    failures made by others; their own wrong attempts count against the caller's
    session or token family, which the caller ends after ``max_failures`` of them.
    Attempts in flight count, so parallel guesses cannot exceed the limit.

    Counts need not outlive ``retention`` (the longest a session or family can
    live). In memory (the default) the table is bounded without ever refusing an
    innocent caller: when it is full, entries without a count go first, then the
    least recently active ones (an attacker would need to fill the whole table with
    guesses of their own, each from a credential of their own, to push a count out).
    """

    def __init__(
        self,
        *,
        max_failures: int,
        retention: float,
        clock: Clock,
        max_keys: int = MAX_TRACKED_KEYS,
        counters: GuardCounters | None = None,
    ) -> None:
        if max_failures < 1 or retention <= 0:
            raise ValueError("max_failures and retention must be positive")
        self._max_failures = max_failures
        self._retention = retention
        self._clock = clock
        self._counters = counters if counters is not None else MemoryCounters(max_keys=max_keys)

    async def check(self, credential: str) -> None:
        """Let one attempt through for ``credential`` or raise :class:`RateLimited`
        (only while that credential's own failures and attempts in flight are at
        the limit)."""
        admitted = await self._counters.begin_guess(
            credential, self._clock(), max_failures=self._max_failures, retention=self._retention
        )
        if not admitted:
            raise RateLimited(1)

    async def record_failure(self, credential: str) -> bool:
        """Count a wrong password; ``True`` when the credential must now be ended."""
        return await self._counters.fail_guess(
            credential, self._clock(), max_failures=self._max_failures, retention=self._retention
        )

    async def record_success(self, credential: str) -> None:
        await self._counters.forget_guess(credential)

    async def abandon(self, credential: str) -> None:
        """Settle an attempt that ended in an error (an unreachable store is not
        raised, as in :meth:`LoginThrottle.abandon`)."""
        with _quietly("abandon"):
            await self._counters.abandon_guess(credential)


@contextlib.contextmanager
def _quietly(step: str) -> Iterator[None]:
    try:
        yield
    except StoreUnavailable as exc:
        logger.warning("throttle counters: %s not recorded: %s", step, exc)


def _key(account: str, device: str | None = None) -> bytes:
    # SHA-256 of the account (or device), so a long junk email costs 32 bytes.
    subject = f"device:{device}" if device is not None else f"account:{account}"
    return hashlib.sha256(subject.encode("utf-8", "surrogatepass")).digest()


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
