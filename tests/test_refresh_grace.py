"""The refresh-token reuse grace (``GATEPASS_REFRESH_REUSE_GRACE``), on SQLite and
PostgreSQL: a retry with the token just rotated gets the same new refresh token
while that one is unused; anything else that presents a rotated token is reuse.

HTTP behaviour runs through the real app (``make_client``); races run many
rotations at once on one real :class:`Gatepass`. Time moves with the FakeClock.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gatepass.config import MAX_REFRESH_REUSE_GRACE, Settings
from gatepass.core import Gatepass
from gatepass.errors import ConfigError, InvalidRefreshToken
from gatepass.passwords import PasswordHasher
from gatepass.refresh import SuccessorSeal, TokenPair
from tests.conftest import FakeClock, bearer, bearer_me_status, register, token_login
from tests.test_refresh import REUSE_METRIC, metric, refresh

MakeClient = Callable[..., TestClient]
GRACE = 10
SEALS = "SELECT sealed_successor FROM gatepass_refresh_tokens WHERE sealed_successor IS NOT NULL"
RACERS = 20


@pytest.fixture
def grace_client(make_client: MakeClient, database_url: str) -> TestClient:
    return make_client(database_url=database_url, refresh_reuse_grace=str(GRACE))


def rotated_pair(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """A login's pair and the pair its first rotation gave."""
    register(client)
    first = token_login(client)
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    return first, response.json()


# within the grace ----------------------------------------------------------------------


def test_a_retry_within_the_grace_returns_the_same_refresh_token_and_a_usable_access_token(
    grace_client: TestClient, clock: FakeClock
) -> None:
    first, second = rotated_pair(grace_client)
    clock.advance(GRACE - 1)

    retry = refresh(grace_client, first["refresh_token"])

    assert retry.status_code == 200, retry.text
    again = retry.json()
    assert again["refresh_token"] == second["refresh_token"]
    assert again["token_type"] == "Bearer"
    assert retry.headers["cache-control"] == "no-store"
    # A freshly signed access token of the same family; the first one lives too.
    assert again["access_token"] != second["access_token"]
    assert bearer_me_status(grace_client, again["access_token"]) == 200
    assert bearer_me_status(grace_client, second["access_token"]) == 200
    assert metric(grace_client, REUSE_METRIC) == 0
    # The family lives on: the successor rotates as usual.
    onward = refresh(grace_client, second["refresh_token"])
    assert onward.status_code == 200, onward.text
    assert bearer_me_status(grace_client, onward.json()["access_token"]) == 200


def test_racing_refreshes_of_one_token_within_the_grace_all_get_the_same_pair(
    make_settings: Callable[..., Settings],
    database_url: str,
    clock: FakeClock,
    fast_hasher: PasswordHasher,
) -> None:
    settings = make_settings(database_url=database_url, refresh_reuse_grace=str(GRACE))

    async def race() -> tuple[list[TokenPair | BaseException], int]:
        gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)
        try:
            user = await gp.accounts.register("ada@example.com", "correct horse battery")
            pair = await gp.accounts.start_token_family(user, ip=None, user_agent=None)
            results = await asyncio.gather(
                *(gp.refresh_tokens.rotate(pair.refresh_token) for _ in range(RACERS)),
                return_exceptions=True,
            )
            for result in results:
                assert isinstance(result, TokenPair), result
                claims = await gp.access_tokens.verify(result.access_token)
                assert claims.sid == pair.family_id
            # The family is alive: its one successor rotates onward.
            (successor,) = {r.refresh_token for r in results if isinstance(r, TokenPair)}
            await gp.refresh_tokens.rotate(successor)
            return results, len(await gp.store.list_families(user.id, clock()))
        finally:
            await gp.close()

    results, live_families = asyncio.run(race())
    assert all(isinstance(r, TokenPair) for r in results), results
    assert len({r.refresh_token for r in results if isinstance(r, TokenPair)}) == 1
    assert live_families == 1


def test_racing_refreshes_without_a_grace_have_one_winner_and_kill_the_family(
    make_settings: Callable[..., Settings],
    database_url: str,
    clock: FakeClock,
    fast_hasher: PasswordHasher,
) -> None:
    settings = make_settings(database_url=database_url)

    async def race() -> tuple[list[TokenPair | BaseException], bool]:
        gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)
        try:
            user = await gp.accounts.register("ada@example.com", "correct horse battery")
            pair = await gp.accounts.start_token_family(user, ip=None, user_agent=None)
            results = await asyncio.gather(
                *(gp.refresh_tokens.rotate(pair.refresh_token) for _ in range(RACERS)),
                return_exceptions=True,
            )
            (winner,) = [r for r in results if isinstance(r, TokenPair)]
            try:
                await gp.refresh_tokens.rotate(winner.refresh_token)
            except InvalidRefreshToken:
                return results, False
            return results, True
        finally:
            await gp.close()

    results, winner_still_rotates = asyncio.run(race())
    assert sum(isinstance(r, TokenPair) for r in results) == 1
    assert all(isinstance(r, InvalidRefreshToken) for r in results if not isinstance(r, TokenPair))
    assert not winner_still_rotates


# what stays reuse ----------------------------------------------------------------------


def test_reuse_after_the_grace_kills_the_family(grace_client: TestClient, clock: FakeClock) -> None:
    first, second = rotated_pair(grace_client)
    clock.advance(GRACE)

    assert refresh(grace_client, first["refresh_token"]).status_code == 401

    assert refresh(grace_client, second["refresh_token"]).status_code == 401
    assert bearer_me_status(grace_client, second["access_token"]) == 401
    assert metric(grace_client, REUSE_METRIC) == 1


def test_replaying_a_token_whose_successor_was_rotated_is_reuse_even_within_the_grace(
    grace_client: TestClient, clock: FakeClock
) -> None:
    # The thief replays the token the victim has already moved past twice.
    first, second = rotated_pair(grace_client)
    third = refresh(grace_client, second["refresh_token"]).json()
    clock.advance(1)

    assert refresh(grace_client, first["refresh_token"]).status_code == 401

    assert refresh(grace_client, third["refresh_token"]).status_code == 401
    assert bearer_me_status(grace_client, third["access_token"]) == 401
    assert metric(grace_client, REUSE_METRIC) == 1


def test_a_retry_within_the_grace_after_the_family_was_logged_out_is_refused(
    grace_client: TestClient,
) -> None:
    first, second = rotated_pair(grace_client)
    logout = grace_client.post("/auth/logout", headers=bearer(second["access_token"]))
    assert logout.status_code == 204

    assert refresh(grace_client, first["refresh_token"]).status_code == 401
    assert refresh(grace_client, second["refresh_token"]).status_code == 401


def test_a_retry_within_the_grace_after_the_family_lifetime_ended_is_refused(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(refresh_reuse_grace=str(GRACE), refresh_token_ttl="100")
    register(client)
    first = token_login(client)
    clock.advance(95)
    assert refresh(client, first["refresh_token"]).status_code == 200
    clock.advance(6)  # within the grace of the rotation, past the family's lifetime
    assert refresh(client, first["refresh_token"]).status_code == 401


def test_without_a_grace_an_immediate_retry_kills_the_family(client: TestClient) -> None:
    first, second = rotated_pair(client)
    assert refresh(client, first["refresh_token"]).status_code == 401
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert bearer_me_status(client, second["access_token"]) == 401


# the sealed successor ------------------------------------------------------------------


def _copy_holds(database: Path, query: str) -> list[str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [str(row[0]) for row in connection.execute(query)]
    finally:
        connection.close()


def test_recovering_a_successor_from_a_database_copy_is_refused(make_client: MakeClient) -> None:
    client = make_client(refresh_reuse_grace=str(GRACE))
    first, second = rotated_pair(client)
    gp: Gatepass = client.app.state.gatepass  # type: ignore[attr-defined]
    database = Path(gp.settings.data_dir) / "gatepass.db"
    raw = b"".join(
        p.read_bytes() for p in database.parent.iterdir() if p.name.startswith("gatepass.db")
    )
    assert second["refresh_token"].encode() not in raw
    (sealed,) = _copy_holds(
        database,
        "SELECT sealed_successor FROM gatepass_refresh_tokens WHERE sealed_successor IS NOT NULL",
    )
    # Everything the copy holds (the generated server secret and the token hashes
    # included) opens nothing without the rotated token itself.
    seal = SuccessorSeal(_copy_holds(database, "SELECT value FROM gatepass_secrets"))
    for stored_hash in _copy_holds(database, "SELECT token_hash FROM gatepass_refresh_tokens"):
        assert seal.open(stored_hash, sealed) is None
    assert seal.open(second["refresh_token"], sealed) is None
    # (The rotated token itself does open it: that is the retry.)
    assert seal.open(first["refresh_token"], sealed) == second["refresh_token"]


def test_a_tampered_seal_opens_nothing() -> None:
    seal = SuccessorSeal(["a server secret of enough length"])
    sealed = seal.seal("rotated-token", "successor-token")
    raw = bytearray(base64.urlsafe_b64decode(sealed))
    raw[-1] ^= 1
    assert seal.open("rotated-token", base64.urlsafe_b64encode(bytes(raw)).decode()) is None
    assert seal.open("rotated-token", "not base64 !") is None
    assert seal.open("rotated-token", sealed) == "successor-token"


def test_a_seal_opens_under_any_configured_secret_and_not_under_a_removed_one() -> None:
    old = SuccessorSeal(["the old server secret, long enough"])
    sealed = old.seal("rotated-token", "successor-token")
    rotated = SuccessorSeal(
        ["the new server secret, long enough", "the old server secret, long enough"]
    )
    assert rotated.open("rotated-token", sealed) == "successor-token"
    assert (
        SuccessorSeal(["the new server secret, long enough"]).open("rotated-token", sealed) is None
    )


def test_seals_and_secrets_stay_out_of_repr() -> None:
    assert "secret" not in repr(SuccessorSeal(["a server secret of enough length"]))


# the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "301", "1.5", "ten"])
def test_an_invalid_reuse_grace_is_a_start_up_error_naming_the_setting(
    make_settings: Callable[..., Settings], value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(refresh_reuse_grace=value)
    assert caught.value.setting == "GATEPASS_REFRESH_REUSE_GRACE"


def test_the_reuse_grace_is_off_by_default(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().refresh_reuse_grace == 0


def test_walking_the_seals_from_an_old_token_with_a_database_copy_yields_nothing(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """Each seal opens with the token it replaced. An attacker with a copy of the
    database (its stored secret included) and a token the family has rotated past
    must not be able to walk the seals up to the live token: only the token rotated
    last holds a seal, and only for as long as the grace."""
    client = make_client(refresh_reuse_grace=str(GRACE))
    register(client)
    chain = [token_login(client)["refresh_token"]]
    for _ in range(4):
        clock.advance(GRACE * 6)
        response = refresh(client, chain[-1])
        assert response.status_code == 200, response.text
        chain.append(response.json()["refresh_token"])
    gp: Gatepass = client.app.state.gatepass  # type: ignore[attr-defined]
    database = Path(gp.settings.data_dir) / "gatepass.db"
    seals = _copy_holds(database, SEALS)
    seal = SuccessorSeal(_copy_holds(database, "SELECT value FROM gatepass_secrets"))
    opened = {seal.open(token, sealed) for token in chain[:-2] for sealed in seals} - {None}
    assert opened == set()
    assert len(seals) == 1  # the retry of the token rotated last, while the grace lasts
    clock.advance(MAX_REFRESH_REUSE_GRACE + 1)
    assert client.portal is not None
    client.portal.call(gp.prune)  # on the app's own event loop
    assert _copy_holds(database, SEALS) == []
