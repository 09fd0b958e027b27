"""Concurrent cache refreshes cost one store read, and a failed read fails every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gatepass._singleflight import SingleFlight
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import StoreUnavailable
from gatepass.passwords import PasswordHasher
from tests.conftest import PASSWORD, FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_concurrent_callers_share_one_read() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    reads = 0
    gate = asyncio.Event()

    async def read() -> int:
        nonlocal reads
        reads += 1
        await gate.wait()
        return 42

    waiters = [asyncio.ensure_future(flight.run("k", read)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 10
    assert reads == 1
    assert await flight.run("k", read) == 42  # a later call reads again
    assert reads == 2


@pytest.mark.anyio
async def test_a_failed_read_fails_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def read() -> int:
        await asyncio.sleep(0)
        raise StoreUnavailable("down")

    results = await asyncio.gather(
        *(flight.run("k", read) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)


@pytest.mark.anyio
async def test_session_cache_refresh_under_load_is_one_store_read(
    make_settings: Callable[..., Settings], fast_hasher: PasswordHasher, clock: FakeClock
) -> None:
    gp = await Gatepass.open(make_settings(), clock=clock, hasher=fast_hasher)
    try:
        user = await gp.accounts.register("ada@example.com", PASSWORD)
        issued, _ = await gp.sessions.create(user, ip=None, user_agent=None, max_per_user=100)
        store = gp.store
        real_get = store.get_session
        calls = 0

        async def counting_get(id_hash: str):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await real_get(id_hash)

        store.get_session = counting_get  # type: ignore[method-assign]
        clock.advance(5)  # past the 1 s session cache
        loaded = await asyncio.gather(*(gp.sessions.load(issued.cookie_value) for _ in range(20)))
        assert all(a is not None and a.user.id == user.id for a in loaded)
        assert calls == 1
    finally:
        await gp.close()
