"""The composition root: the store a Gatepass runs on is injectable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatepass.config import load_settings
from gatepass.core import Gatepass
from gatepass.passwords import PasswordHasher
from gatepass.stores.sql import SqlStore
from tests.conftest import PASSWORD, FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_an_injected_store_is_used_instead_of_the_configured_one(
    tmp_path: Path, clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    settings = load_settings({}, data_dir=tmp_path / "configured")
    own = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher, store=own)
    try:
        user = await gp.accounts.register("ada@example.com", PASSWORD)
        assert gp.store is own
        assert (await own.get_user(user.id)) is not None
    finally:
        await gp.close()
    # Nothing was written where the settings point.
    assert not (tmp_path / "configured" / "gatepass.db").exists()
