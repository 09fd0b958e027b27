"""A per-process cache of user records, for the request paths that need the user
on every request (Bearer tokens; sessions kept apart from the users)."""

from __future__ import annotations

from gatepass._singleflight import SingleFlight
from gatepass.clock import Clock
from gatepass.stores.base import UserRecord, UserStore

#: Users (email, roles, credential version) are kept this long.
USER_CACHE_SECONDS = 30.0
USER_CACHE_SIZE = 10_000


class UserCache:
    """Users read from ``users``, kept :data:`USER_CACHE_SECONDS`.

    Concurrent misses for one user share one read. A read in flight while
    :meth:`drop` runs is not kept: it may predate the change that dropped it.
    """

    def __init__(
        self,
        users: UserStore,
        clock: Clock,
        *,
        seconds: float = USER_CACHE_SECONDS,
        size: int = USER_CACHE_SIZE,
    ) -> None:
        self._users = users
        self._clock = clock
        self._seconds = seconds
        self._size = size
        self._cache: dict[str, tuple[UserRecord, float]] = {}
        self._reads: SingleFlight[str, UserRecord | None] = SingleFlight()
        self._generation = 0

    async def get(self, user_id: str) -> UserRecord | None:
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and now - cached[1] < self._seconds:
            return cached[0]
        generation = self._generation
        user = await self._reads.run(user_id, lambda: self._users.get_user(user_id))
        if user is not None and generation == self._generation:
            if user_id not in self._cache and len(self._cache) >= self._size:
                del self._cache[next(iter(self._cache))]
            self._cache[user_id] = (user, now)
        return user

    def peek(self, user_id: str) -> UserRecord | None:
        """The cached record of ``user_id`` while it is fresh; ``None`` otherwise (the
        caller reads it through :meth:`get`). Memory only, never a store read."""
        cached = self._cache.get(user_id)
        if cached is not None and self._clock() - cached[1] < self._seconds:
            return cached[0]
        return None

    def drop(self, user_id: str | None = None) -> None:
        """Forget ``user_id`` (every user when ``None``)."""
        self._generation += 1
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)
