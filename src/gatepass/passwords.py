"""The password policy, and password hashing with argon2id run off the event loop.

A new password (registration, change) must pass :func:`check_password_policy`,
as NIST SP 800-63B asks: 8 to 1024 characters counted as typed (before NFKC),
not only white space, and not on the bundled list of common passwords. Existing
hashes are not judged by it: a password set under older rules still verifies.

Passwords are NFKC-normalised before hashing so that the same password typed
on different keyboards (full-width digits, composed accents) verifies. Hashing
and verification run in a worker thread: argon2 is deliberately slow and must
never block the event loop that verifies other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from typing import TypeVar

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gatepass.errors import Overloaded

# Re-exported: ``from gatepass.passwords import PasswordPolicyError`` is public API.
from gatepass.errors import PasswordPolicyError as PasswordPolicyError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
#: 19,640 common passwords (Django's list; see data/common-passwords.LICENSE).
COMMON_PASSWORDS_RESOURCE = "data/common-passwords.txt.gz"

#: OWASP's argon2id minimum is m=19 MiB, t=2, p=1; we sit a little above it.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_COST_KIB = 19 * 1024
DEFAULT_PARALLELISM = 1
#: Niceness of the hashing threads: a burst of logins must not starve the event
#: loop that verifies every other request (Linux honours per-thread niceness).
HASHING_THREAD_NICENESS = 19
#: Password hashes (and verifies) queued or running at once, per process. Beyond
#: it new password work is refused at once (:class:`~gatepass.errors.Overloaded`):
#: with ~40 ms a hash on two cores, a full queue drains in about 0.6 s, so an
#: ordinary burst of sign-ins is served and a flood turns into refusals, never
#: into every sign-in slowing down.
DEFAULT_MAX_PENDING = 32

T = TypeVar("T")


def _lower_thread_priority() -> None:
    # Not Linux, or not permitted: hashing still works, at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_THREAD_NICENESS)


def _comparable(password: str) -> str:
    # How the list is compared: NFKC, case folded, surrounding white space ignored.
    return unicodedata.normalize("NFKC", password).casefold().strip()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords, read once on first use."""
    data = files("gatepass").joinpath(COMMON_PASSWORDS_RESOURCE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return frozenset(_comparable(line) for line in lines if line.strip())


def check_password_policy(password: str) -> None:
    """Raise :class:`PasswordPolicyError` unless ``password`` may be set as a new one.

    The message names the rule that failed, never the password.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordPolicyError("password is not valid Unicode text") from None
    # Counted as typed: NFKC may expand a character (U+FB00 is "ff") or merge two.
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
        )
    if password.isspace():
        raise PasswordPolicyError("password must not be only white space")
    if _comparable(password) in common_passwords():
        raise PasswordPolicyError(
            "password is on the list of commonly used passwords; choose another"
        )


def normalise_password(password: str) -> str:
    """Check a new password against the policy; return the NFKC form that is hashed."""
    check_password_policy(password)
    return unicodedata.normalize("NFKC", password)


def _hashable(password: str) -> str:
    """The NFKC form that argon2 sees, for any password that may have been set.

    No policy here beyond valid text and the length cap: a password set under
    older rules must still verify (and be rehashed).
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordPolicyError("password is not valid Unicode text") from None
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    needs_rehash: bool = False


class PasswordHasher:
    """argon2id hashing with async entry points and a dummy verify for unknown users."""

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be positive")
        self.max_pending = max_pending
        self._pending = 0
        self._hasher = _Argon2(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._dummy_hash: str | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def saturated(self) -> bool:
        """Whether new password work would be refused now (the queue is full)."""
        return self._pending >= self.max_pending

    async def _off_loop(self, fn: Callable[..., T], *args: str) -> T:
        """Run ``fn`` in the low-priority hashing pool, never on the event loop.

        Raises :class:`~gatepass.errors.Overloaded` at once when ``max_pending``
        jobs are already queued or running.
        """
        if self.saturated:
            raise Overloaded(retry_after=1)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1,
                thread_name_prefix="gatepass-argon2",
                initializer=_lower_thread_priority,
            )
        loop = asyncio.get_running_loop()
        self._pending += 1
        job = self._pool.submit(fn, *args)
        # Released when the thread is done, not when the caller stops waiting: a
        # cancelled request whose hash still runs keeps its place in the queue.
        job.add_done_callback(lambda _job: self._release_soon(loop))
        return await asyncio.wrap_future(job)

    def _release_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to count
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._pending -= 1

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(_hashable(password))

    def verify_sync(self, stored_hash: str, password: str) -> VerifyResult:
        try:
            candidate = _hashable(password)
        except PasswordPolicyError:
            # Still spend the time of a verify so a short password is not a timing oracle.
            self._spend_dummy_verify()
            return VerifyResult(ok=False)
        try:
            self._hasher.verify(stored_hash, candidate)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return VerifyResult(ok=False)
        return VerifyResult(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored_hash))

    def dummy_verify_sync(self, password: str) -> VerifyResult:
        """Spend the time of a real verify and fail: used when the account does not exist."""
        del password  # argon2's cost does not depend on the candidate
        self._spend_dummy_verify()
        return VerifyResult(ok=False)

    def _spend_dummy_verify(self) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash("gatepass dummy password for timing")
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, "not the dummy password")

    def close(self) -> None:
        """Stop the hashing threads (they are started again on next use)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    async def hash(self, password: str) -> str:
        return await self._off_loop(self.hash_sync, password)

    async def verify(self, stored_hash: str, password: str) -> VerifyResult:
        return await self._off_loop(self.verify_sync, stored_hash, password)

    async def dummy_verify(self, password: str) -> VerifyResult:
        return await self._off_loop(self.dummy_verify_sync, password)

    async def warm_up(self) -> None:
        """Compute the dummy hash and read the common-password list now, so neither
        the first unknown-email login nor the first registration pays for it."""
        await self._off_loop(self._spend_dummy_verify)
        await asyncio.get_running_loop().run_in_executor(None, common_passwords)
