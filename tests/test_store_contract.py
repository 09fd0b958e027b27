"""The store contract, run over every backend combination: SQLite; PostgreSQL;
PostgreSQL + Redis; PostgreSQL + Redis Cluster (real servers, see tests/servers.py).

Each test names a rule the core relies on. The store comes from the settings
factory, as a deployment's does, so these run exactly what `gatepass serve` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from sqlalchemy import select

from gatepass.config import Settings
from gatepass.errors import DuplicateRecord
from gatepass.freshness import SignInProof
from gatepass.sessions import hash_session_id, new_session_id
from gatepass.stores.base import (
    EmailTaken,
    FamilyRecord,
    LinkRecord,
    PasskeyRecord,
    PendingSignInRecord,
    RotationStatus,
    SessionLimit,
    SessionRecord,
    Store,
    UserRecord,
    WebAuthnChallengeRecord,
)
from gatepass.stores.factory import store_from_settings
from gatepass.stores.split import SplitStore
from gatepass.stores.sql import SqlStore, refresh_tokens
from tests.conftest import FakeClock
from tests.servers import Backend

IDLE, ABSOLUTE = 1800.0, 86_400.0
ROOMY = SessionLimit(100, IDLE, ABSOLUTE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(
    backend: Backend, make_settings: Callable[..., Settings], clock: FakeClock
) -> AsyncIterator[Store]:
    opened = store_from_settings(make_settings(**backend.env()), clock=clock)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


async def new_user(store: Store, clock: FakeClock, email: str = "ada@example.com") -> UserRecord:
    return await store.create_user(email, "$argon2id$stand-in", ["user"], clock())


def new_session(user: UserRecord, clock: FakeClock, **changes: object) -> SessionRecord:
    record = SessionRecord(
        id_hash=hash_session_id(new_session_id(user.id)),
        handle=secrets.token_urlsafe(16),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=clock(),
        last_seen_at=clock(),
        ip="203.0.113.7",
        user_agent="Mozilla/5.0 (X11; Linux x86_64)",
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def new_family(user: UserRecord, clock: FakeClock) -> tuple[FamilyRecord, str]:
    family = FamilyRecord(
        id=secrets.token_urlsafe(16),
        user_id=user.id,
        created_at=clock(),
        last_used_at=clock(),
        expires_at=clock() + 3600,
        ip=None,
        user_agent=None,
    )
    return family, hashlib.sha256(secrets.token_bytes(32)).hexdigest()


pytestmark = pytest.mark.anyio


# sessions --------------------------------------------------------------------


async def test_a_stored_session_comes_back_with_its_user(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    record = new_session(user, clock)
    assert await store.insert_session(record, credential_version=0, limit=ROOMY) is not None
    found = await store.get_session(record.id_hash)
    assert found is not None
    assert found[0] == record
    assert found[1].id == user.id
    assert found[1].email == user.email


async def test_an_unknown_or_forged_session_hash_finds_nothing(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    record = new_session(user, clock)
    await store.insert_session(record, credential_version=0, limit=ROOMY)
    assert await store.get_session(hash_session_id(new_session_id(user.id))) is None
    assert await store.get_session("0" * 64) is None
    assert await store.get_session("not a hash") is None


async def test_touch_moves_last_seen(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    record = new_session(user, clock)
    await store.insert_session(record, credential_version=0, limit=ROOMY)
    clock.advance(120)
    await store.touch_session(record.id_hash, clock())
    found = await store.get_session(record.id_hash)
    assert found is not None
    assert found[0].last_seen_at == clock()


async def test_a_deleted_session_is_gone_and_deleting_again_says_so(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    record = new_session(user, clock)
    await store.insert_session(record, credential_version=0, limit=ROOMY)
    assert await store.delete_session(record.id_hash) is True
    assert await store.get_session(record.id_hash) is None
    assert await store.delete_session(record.id_hash) is False
    assert await store.list_sessions(user.id) == []


async def test_another_users_session_handle_cannot_be_deleted(
    store: Store, clock: FakeClock
) -> None:
    ada, eve = await new_user(store, clock), await new_user(store, clock, "eve@example.com")
    record = new_session(ada, clock)
    await store.insert_session(record, credential_version=0, limit=ROOMY)
    assert await store.delete_session_by_handle(eve.id, record.handle) is False
    assert await store.get_session(record.id_hash) is not None
    assert await store.delete_session_by_handle(ada.id, record.handle) is True
    assert await store.get_session(record.id_hash) is None


async def test_listing_gives_the_users_own_sessions_oldest_first(
    store: Store, clock: FakeClock
) -> None:
    ada, bob = await new_user(store, clock), await new_user(store, clock, "bob@example.com")
    mine = []
    for _ in range(3):
        mine.append(new_session(ada, clock))
        await store.insert_session(mine[-1], credential_version=0, limit=ROOMY)
        clock.advance(1)
    await store.insert_session(new_session(bob, clock), credential_version=0, limit=ROOMY)
    listed = await store.list_sessions(ada.id)
    assert [r.handle for r in listed] == [r.handle for r in mine]
    assert listed[0] == mine[0]


async def test_the_session_limit_ends_the_least_recently_seen_credential(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    limit = SessionLimit(3, IDLE, ABSOLUTE)
    first = new_session(user, clock)
    await store.insert_session(first, credential_version=0, limit=limit)
    clock.advance(1)
    family, token = new_family(user, clock)
    await store.create_family(family, token, credential_version=0, limit=limit)
    clock.advance(1)
    second = new_session(user, clock)
    await store.insert_session(second, credential_version=0, limit=limit)
    clock.advance(1)
    await store.touch_session(first.id_hash, clock())  # now the family is the oldest seen
    clock.advance(1)
    third = new_session(user, clock)
    evicted = await store.insert_session(third, credential_version=0, limit=limit)
    assert evicted is not None
    assert evicted.families == (family.id,)
    assert evicted.sessions == ()
    clock.advance(1)
    other, other_token = new_family(user, clock)
    evicted = await store.create_family(other, other_token, credential_version=0, limit=limit)
    assert evicted is not None
    assert evicted.sessions == (second.handle,)
    assert {r.handle for r in await store.list_sessions(user.id)} == {first.handle, third.handle}
    assert [f.id for f in await store.list_families(user.id, clock())] == [other.id]


async def test_a_sign_in_that_read_an_old_credential_version_stores_nothing(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    # What a password change does first: end the sessions, with a floor.
    await store.end_user_sessions(user.id, min_credential_version=user.credential_version + 1)
    version = await store.change_credentials(
        user.id, clock(), password_hash="$new", credential_version=user.credential_version
    )
    assert version == user.credential_version + 1
    late = new_session(user, clock)
    assert await store.insert_session(late, credential_version=0, limit=ROOMY) is None
    assert await store.get_session(late.id_hash) is None
    family, token = new_family(user, clock)
    assert await store.create_family(family, token, credential_version=0, limit=ROOMY) is None
    current = new_session(user, clock)
    stored = await store.insert_session(current, credential_version=version, limit=ROOMY)
    assert stored is not None


async def test_a_version_floor_alone_refuses_a_late_session(store: Store, clock: FakeClock) -> None:
    """Between the first write of a password change (sessions end) and its database
    commit, a sign-in with the old version must not store a session either. Stores
    that keep sessions with the users check the version on the row; Redis keeps
    the floor."""
    user = await new_user(store, clock)
    ended_before = new_session(user, clock)
    await store.insert_session(ended_before, credential_version=0, limit=ROOMY)
    assert await store.end_user_sessions(user.id, min_credential_version=1) == 1
    assert await store.get_session(ended_before.id_hash) is None
    if backend_keeps_sessions_apart(store):
        late = new_session(user, clock)
        assert await store.insert_session(late, credential_version=0, limit=ROOMY) is None


def backend_keeps_sessions_apart(store: Store) -> bool:
    return isinstance(store, SplitStore)


async def test_ending_a_users_sessions_leaves_other_users_alone(
    store: Store, clock: FakeClock
) -> None:
    ada, bob = await new_user(store, clock), await new_user(store, clock, "bob@example.com")
    for _ in range(3):
        await store.insert_session(new_session(ada, clock), credential_version=0, limit=ROOMY)
    bobs = new_session(bob, clock)
    await store.insert_session(bobs, credential_version=0, limit=ROOMY)
    assert await store.end_user_sessions(ada.id, min_credential_version=1) == 3
    assert await store.list_sessions(ada.id) == []
    assert await store.get_session(bobs.id_hash) is not None


async def test_of_two_racing_password_changes_exactly_one_wins(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    results = await asyncio.gather(
        *(
            store.change_credentials(
                user.id, clock(), password_hash=f"$hash{i}", credential_version=0
            )
            for i in range(2)
        )
    )
    assert sorted(results, key=str) == [1, None]
    stored = await store.get_user(user.id)
    assert stored is not None
    assert stored.credential_version == 1
    assert stored.tokens_valid_after == clock()


async def test_changing_credentials_revokes_every_family(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    family, token = new_family(user, clock)
    await store.create_family(family, token, credential_version=0, limit=ROOMY)
    assert await store.change_credentials(user.id, clock()) == 1
    assert await store.list_families(user.id, clock()) == []
    outcome = await store.rotate_refresh_token(token, "f" * 64, clock())
    assert outcome.status is RotationStatus.INVALID
    events = await store.revocation_events(0)
    assert any(e.kind == "family" and e.subject == family.id for e in events)


async def test_of_concurrent_rotations_of_one_token_exactly_one_wins(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    family, token = new_family(user, clock)
    await store.create_family(family, token, credential_version=0, limit=ROOMY)
    outcomes = await asyncio.gather(
        *(store.rotate_refresh_token(token, f"{i:064x}", clock()) for i in range(20))
    )
    statuses = [o.status for o in outcomes]
    assert statuses.count(RotationStatus.ROTATED) == 1


async def test_a_taken_email_is_a_duplicate(store: Store, clock: FakeClock) -> None:
    await new_user(store, clock)
    with pytest.raises(DuplicateRecord):
        await new_user(store, clock)


async def test_store_reports_itself_reachable(store: Store) -> None:
    await store.ping()


async def test_a_hostile_user_agent_is_stored_and_survives_a_touch(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    agent = 'Ünïcode "quoted" \\back\\slash / \t tab ]}, {"injected": 1} ' + "x" * 400
    record = new_session(user, clock, user_agent=agent, ip="2001:db8::1")
    await store.insert_session(record, credential_version=0, limit=ROOMY)
    clock.advance(90)
    await store.touch_session(record.id_hash, clock())
    found = await store.get_session(record.id_hash)
    assert found is not None
    assert found[0].user_agent == agent
    assert found[0].ip == "2001:db8::1"
    assert found[0].handle == record.handle
    (listed,) = await store.list_sessions(user.id)
    assert listed.user_agent == agent
    assert listed.last_seen_at == clock()


async def test_only_the_token_rotated_last_keeps_its_sealed_successor(
    store: Store, clock: FakeClock
) -> None:
    """A seal opens with the token it replaced: kept on older tokens, a chain of
    seals would lead from any old token (and a copy of the database) to the live one."""
    user = await new_user(store, clock)
    family, token = new_family(user, clock)
    await store.create_family(family, token, credential_version=0, limit=ROOMY)
    chain = [token]
    for index in range(3):
        successor = f"{index:064x}"
        outcome = await store.rotate_refresh_token(
            chain[-1], successor, clock(), sealed_successor=f"seal-{index}", reuse_grace=10
        )
        assert outcome.status is RotationStatus.ROTATED
        chain.append(successor)
        clock.advance(60)
    database = store.database if isinstance(store, SplitStore) else store
    assert isinstance(database, SqlStore)
    async with database.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(refresh_tokens.c.token_hash, refresh_tokens.c.sealed_successor).where(
                    refresh_tokens.c.sealed_successor.is_not(None)
                )
            )
        ).all()
    assert [tuple(row) for row in rows] == [(chain[-2], "seal-2")]


# accounts: links, verification, address change, deletion ----------------------


def new_link(user: UserRecord, clock: FakeClock, purpose: str, **changes: object) -> LinkRecord:
    link = LinkRecord(
        token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        purpose=purpose,
        user_id=user.id,
        email=user.email,
        created_at=clock(),
        expires_at=clock() + 600,
    )
    return replace(link, **changes)  # type: ignore[arg-type]


async def test_of_concurrent_uses_of_one_link_exactly_one_gets_it(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    link = new_link(user, clock, "reset_password")
    await store.create_link(link)
    assert await store.peek_link(link.token_hash, ["reset_password"], clock()) == link
    results = await asyncio.gather(
        *(store.consume_link(link.token_hash, ["reset_password"], clock()) for _ in range(10))
    )
    assert [r for r in results if r is not None] == [link]
    assert await store.peek_link(link.token_hash, ["reset_password"], clock()) is None


async def test_a_link_serves_only_its_purpose_and_only_until_it_expires(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    link = new_link(user, clock, "verify_email")
    await store.create_link(link)
    assert await store.consume_link(link.token_hash, ["reset_password"], clock()) is None
    clock.advance(600)
    assert await store.consume_link(link.token_hash, ["verify_email"], clock()) is None
    assert await store.prune_expired(clock(), session_idle=IDLE, session_absolute=ABSOLUTE) >= 1


async def test_ending_credentials_kills_pending_changes_and_a_new_password_reset_links(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    reset = new_link(user, clock, "reset_password")
    verify = new_link(user, clock, "verify_email")
    change = new_link(user, clock, "change_email", email="intruder@example.com")
    for link in (reset, verify, change):
        await store.create_link(link)
    assert await store.change_credentials(user.id, clock()) == 1  # logout-all
    assert await store.peek_link(change.token_hash, ["change_email"], clock()) is None
    assert await store.peek_link(reset.token_hash, ["reset_password"], clock()) is not None
    assert await store.change_credentials(user.id, clock(), password_hash="$argon2id$new") == 2
    assert await store.peek_link(reset.token_hash, ["reset_password"], clock()) is None
    assert await store.peek_link(verify.token_hash, ["verify_email"], clock()) is not None


async def test_verifying_needs_the_address_the_link_was_sent_to(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    assert not user.email_verified
    assert await store.mark_email_verified(user.id, "someone-else@example.com") is None
    verified = await store.mark_email_verified(user.id, user.email)
    assert verified is not None
    assert verified.email_verified
    stored = await store.get_user(user.id)
    assert stored is not None
    assert stored.email_verified


async def test_an_address_change_moves_the_account_and_refuses_a_taken_address(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    other = await new_user(store, clock, "grace@example.com")
    pending = new_link(user, clock, "change_email", email="new@example.com")
    old_reset = new_link(user, clock, "reset_password")
    await store.create_link(pending)
    await store.create_link(old_reset)
    with pytest.raises(EmailTaken):
        await store.change_email(user.id, other.email)
    moved = await store.change_email(user.id, "new@example.com")
    assert moved is not None
    assert moved.email == "new@example.com"
    assert moved.email_verified
    assert await store.get_user_by_email("ada@example.com") is None
    assert await store.peek_link(pending.token_hash, ["change_email"], clock()) is None
    assert await store.peek_link(old_reset.token_hash, ["reset_password"], clock()) is None


async def test_deleting_a_user_removes_every_credential_and_frees_the_address(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    session = new_session(user, clock)
    await store.insert_session(session, credential_version=0, limit=ROOMY)
    family, token = new_family(user, clock)
    await store.create_family(family, token, credential_version=0, limit=ROOMY)
    link = new_link(user, clock, "reset_password")
    await store.create_link(link)
    # As the core does it: the sessions first (under a floor), then the user.
    await store.end_user_sessions(user.id, min_credential_version=user.credential_version + 1)
    assert await store.delete_user(user.id, clock())
    assert await store.get_user(user.id) is None
    assert await store.get_session(session.id_hash) is None
    outcome = await store.rotate_refresh_token(token, "f" * 64, clock())
    assert outcome.status is RotationStatus.INVALID
    assert await store.peek_link(link.token_hash, ["reset_password"], clock()) is None
    events = await store.revocation_events(0)
    assert any(e.kind == "epoch" and e.subject == user.id for e in events)
    assert any(e.kind == "family" and e.subject == family.id for e in events)
    # A sign-in that read the user before it went stores nothing.
    late = new_session(user, clock)
    assert await store.insert_session(late, credential_version=0, limit=ROOMY) is None
    assert await store.get_session(late.id_hash) is None
    assert not await store.delete_user(user.id, clock())
    again = await new_user(store, clock)
    assert again.id != user.id


# second factors: TOTP and recovery codes -------------------------------------------


def code_hashes(count: int) -> list[str]:
    return [hashlib.sha256(secrets.token_bytes(16)).hexdigest() for _ in range(count)]


async def active_totp(store: Store, clock: FakeClock, user: UserRecord, step: int = 100) -> None:
    assert await store.save_pending_totp(user.id, "sealed-1", clock())
    assert await store.activate_totp(user.id, "sealed-1", step, code_hashes(10))


async def test_a_pending_totp_setup_is_replaced_but_an_active_one_is_kept(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    assert await store.get_totp(user.id) is None
    assert await store.save_pending_totp(user.id, "sealed-1", clock())
    clock.advance(5)
    assert await store.save_pending_totp(user.id, "sealed-2", clock())
    pending = await store.get_totp(user.id)
    assert pending is not None
    assert (pending.sealed_secret, pending.active, pending.last_step) == ("sealed-2", False, None)
    assert pending.created_at == clock()
    # The replaced setup cannot be activated any more; the current one can.
    assert not await store.activate_totp(user.id, "sealed-1", 7, code_hashes(10))
    assert await store.activate_totp(user.id, "sealed-2", 7, code_hashes(10))
    assert not await store.save_pending_totp(user.id, "sealed-3", clock())
    active = await store.get_totp(user.id)
    assert active is not None
    assert (active.sealed_secret, active.active, active.last_step) == ("sealed-2", True, 7)
    assert await store.count_recovery_codes(user.id) == 10


async def test_a_totp_step_at_or_before_the_last_accepted_is_refused(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    assert await store.save_pending_totp(user.id, "sealed-1", clock())
    assert not await store.accept_totp_step(user.id, 5)  # pending: nothing to accept
    assert await store.activate_totp(user.id, "sealed-1", 100, code_hashes(10))
    assert not await store.accept_totp_step(user.id, 100)
    assert not await store.accept_totp_step(user.id, 99)
    assert await store.accept_totp_step(user.id, 101)
    assert not await store.accept_totp_step(user.id, 101)
    record = await store.get_totp(user.id)
    assert record is not None
    assert record.last_step == 101


async def test_of_concurrent_accepts_of_one_totp_step_exactly_one_wins(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    await active_totp(store, clock, user, step=100)
    results = await asyncio.gather(*(store.accept_totp_step(user.id, 101) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_of_concurrent_uses_of_one_recovery_code_exactly_one_wins(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    assert await store.save_pending_totp(user.id, "sealed-1", clock())
    hashes = code_hashes(10)
    assert await store.activate_totp(user.id, "sealed-1", 100, hashes)
    results = await asyncio.gather(
        *(store.consume_recovery_code(user.id, [hashes[3]]) for _ in range(10))
    )
    assert sorted(results) == [False] * 9 + [True]
    assert await store.count_recovery_codes(user.id) == 9
    assert not await store.consume_recovery_code(user.id, [])
    assert not await store.consume_recovery_code(user.id, ["0" * 64])


async def test_another_users_recovery_code_is_not_consumed(store: Store, clock: FakeClock) -> None:
    ada, bob = await new_user(store, clock), await new_user(store, clock, "bob@example.com")
    assert await store.save_pending_totp(ada.id, "sealed-1", clock())
    hashes = code_hashes(10)
    assert await store.activate_totp(ada.id, "sealed-1", 100, hashes)
    assert not await store.consume_recovery_code(bob.id, [hashes[0]])
    assert await store.count_recovery_codes(ada.id) == 10


async def test_new_recovery_codes_replace_the_old_ones_and_need_an_active_totp(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    assert not await store.replace_recovery_codes(user.id, code_hashes(10))
    assert await store.save_pending_totp(user.id, "sealed-1", clock())
    assert not await store.replace_recovery_codes(user.id, code_hashes(10))
    old = code_hashes(10)
    assert await store.activate_totp(user.id, "sealed-1", 100, old)
    new = code_hashes(10)
    assert await store.replace_recovery_codes(user.id, new)
    assert await store.count_recovery_codes(user.id) == 10
    assert not await store.consume_recovery_code(user.id, [old[0]])
    assert await store.consume_recovery_code(user.id, [new[0]])


async def test_removing_totp_removes_its_recovery_codes(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    await active_totp(store, clock, user)
    assert await store.delete_totp(user.id)
    assert await store.get_totp(user.id) is None
    assert await store.count_recovery_codes(user.id) == 0
    assert not await store.delete_totp(user.id)
    # A removed factor can be set up anew.
    assert await store.save_pending_totp(user.id, "sealed-2", clock())


async def test_deleting_a_user_deletes_its_factors(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    await active_totp(store, clock, user)
    assert await store.delete_user(user.id, clock())
    assert await store.get_totp(user.id) is None
    assert await store.count_recovery_codes(user.id) == 0


# sign-in proofs (auth_time, amr) -------------------------------------------------


async def test_a_session_keeps_its_sign_in_proof_and_a_renewal_keeps_its_id(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    session = new_session(user, clock, auth_time=clock(), amr=("pwd",))
    await store.insert_session(session, credential_version=0, limit=ROOMY)
    found = await store.get_session(session.id_hash)
    assert found is not None
    assert (found[0].auth_time, found[0].amr) == (clock(), ("pwd",))
    clock.advance(600)
    renewed = SignInProof(clock(), ("pwd", "otp", "mfa"))
    assert await store.renew_session_proof(session.id_hash, renewed)
    found = await store.get_session(session.id_hash)
    assert found is not None
    assert (found[0].auth_time, found[0].amr) == (renewed.auth_time, renewed.amr)
    assert found[0].handle == session.handle
    await store.delete_session(session.id_hash)
    assert not await store.renew_session_proof(session.id_hash, renewed)
    assert await store.get_session(session.id_hash) is None  # not brought back


async def test_a_family_keeps_its_sign_in_proof_through_rotation_and_renewal(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    family, token = new_family(user, clock)
    family = replace(family, auth_time=clock(), amr=("hwk", "user"))
    await store.create_family(family, token, credential_version=0, limit=ROOMY)
    outcome = await store.rotate_refresh_token(token, "e" * 64, clock())
    assert outcome.family is not None
    assert (outcome.family.auth_time, outcome.family.amr) == (clock(), ("hwk", "user"))
    renewed = SignInProof(clock() + 60, ("pwd",))
    other = await new_user(store, clock, "grace@example.com")
    assert not await store.renew_family_proof(family.id, other.id, renewed)
    assert await store.renew_family_proof(family.id, user.id, renewed)
    (listed,) = await store.list_families(user.id, clock())
    assert (listed.auth_time, listed.amr) == (renewed.auth_time, renewed.amr)


# sign-ins pending a second factor -------------------------------------------------


def new_pending(user: UserRecord, clock: FakeClock) -> PendingSignInRecord:
    return PendingSignInRecord(
        token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        user_id=user.id,
        client="mobile",
        credential_version=user.credential_version,
        auth_time=clock(),
        amr=("pwd",),
        created_at=clock(),
        expires_at=clock() + 300,
    )


async def test_of_concurrent_finishes_of_one_pending_sign_in_exactly_one_gets_it(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    pending = new_pending(user, clock)
    await store.create_pending_sign_in(pending)
    assert await store.get_pending_sign_in(pending.token_hash, clock()) == pending
    results = await asyncio.gather(
        *(store.consume_pending_sign_in(pending.token_hash, clock()) for _ in range(10))
    )
    assert [r for r in results if r is not None] == [pending]


async def test_a_pending_sign_in_dies_at_its_failure_limit_or_its_expiry(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    pending = new_pending(user, clock)
    await store.create_pending_sign_in(pending)
    for _ in range(4):
        assert not await store.fail_pending_sign_in(pending.token_hash, max_failures=5)
    found = await store.get_pending_sign_in(pending.token_hash, clock())
    assert found is not None
    assert found.failures == 4
    assert await store.fail_pending_sign_in(pending.token_hash, max_failures=5)
    assert await store.get_pending_sign_in(pending.token_hash, clock()) is None
    late = new_pending(user, clock)
    await store.create_pending_sign_in(late)
    clock.advance(300)
    assert await store.consume_pending_sign_in(late.token_hash, clock()) is None
    assert await store.prune_expired(clock(), session_idle=IDLE, session_absolute=ABSOLUTE) >= 1


# passkeys --------------------------------------------------------------------


def new_passkey(user: UserRecord, clock: FakeClock, **changes: object) -> PasskeyRecord:
    record = PasskeyRecord(
        id=secrets.token_urlsafe(16),
        user_id=user.id,
        credential_id=secrets.token_bytes(32),
        public_key=b"\xa5\x01\x02\x03\x26" + secrets.token_bytes(64),
        sign_count=0,
        transports=("internal", "hybrid"),
        name="Laptop",
        created_at=clock(),
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def new_challenge(
    ceremony: str, user: UserRecord | None, clock: FakeClock
) -> WebAuthnChallengeRecord:
    return WebAuthnChallengeRecord(
        challenge_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        ceremony=ceremony,
        user_id=None if user is None else user.id,
        expires_at=clock() + 300,
    )


async def test_a_stored_passkey_comes_back_whole_by_credential_id(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    passkey = new_passkey(user, clock, sign_count=2**32 - 1)  # counters are unsigned 32-bit
    await store.add_passkey(passkey)
    assert await store.get_passkey_by_credential_id(passkey.credential_id) == passkey
    assert await store.get_passkey_by_credential_id(secrets.token_bytes(32)) is None
    assert await store.get_passkey_by_credential_id(b"\x00" * 2000) is None
    assert await store.list_passkeys(user.id) == [passkey]
    assert await store.count_passkeys(user.id) == 1


async def test_a_credential_id_is_registered_once_across_users(
    store: Store, clock: FakeClock
) -> None:
    ada, eve = await new_user(store, clock), await new_user(store, clock, "eve@example.com")
    passkey = new_passkey(ada, clock)
    await store.add_passkey(passkey)
    with pytest.raises(DuplicateRecord):
        await store.add_passkey(new_passkey(eve, clock, credential_id=passkey.credential_id))
    assert await store.list_passkeys(eve.id) == []


async def test_only_the_owner_renames_or_deletes_a_passkey(store: Store, clock: FakeClock) -> None:
    ada, eve = await new_user(store, clock), await new_user(store, clock, "eve@example.com")
    passkey = new_passkey(ada, clock)
    await store.add_passkey(passkey)
    assert await store.rename_passkey(eve.id, passkey.id, "Eve's") is None
    assert await store.delete_passkey(eve.id, passkey.id) is False
    assert await store.delete_passkey(ada.id, "nul\x00") is False
    assert await store.rename_passkey(ada.id, "nul\x00", "x") is None
    renamed = await store.rename_passkey(ada.id, passkey.id, "Phone")
    assert renamed == replace(passkey, name="Phone")
    assert await store.delete_passkey(ada.id, passkey.id) is True
    assert await store.delete_passkey(ada.id, passkey.id) is False
    assert await store.count_passkeys(ada.id) == 0


async def test_a_sign_count_is_stored_only_when_it_grows(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    passkey = new_passkey(user, clock, sign_count=5)
    await store.add_passkey(passkey)
    assert await store.record_passkey_use(passkey.id, 5, clock()) is False
    assert await store.record_passkey_use(passkey.id, 4, clock()) is False
    assert await store.record_passkey_use(passkey.id, 0, clock()) is False
    clock.advance(10)
    assert await store.record_passkey_use(passkey.id, 7, clock()) is True
    stored = await store.get_passkey_by_credential_id(passkey.credential_id)
    assert stored is not None
    assert (stored.sign_count, stored.last_used_at) == (7, clock())


async def test_a_counterless_passkey_records_each_use(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    passkey = new_passkey(user, clock)
    await store.add_passkey(passkey)
    assert await store.record_passkey_use(passkey.id, 0, clock()) is True
    clock.advance(5)
    assert await store.record_passkey_use(passkey.id, 0, clock()) is True
    stored = await store.get_passkey_by_credential_id(passkey.credential_id)
    assert stored is not None
    assert stored.last_used_at == clock()


async def test_of_concurrent_uses_of_one_sign_count_exactly_one_is_stored(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    passkey = new_passkey(user, clock, sign_count=1)
    await store.add_passkey(passkey)
    results = await asyncio.gather(
        *(store.record_passkey_use(passkey.id, 2, clock()) for _ in range(10))
    )
    assert sorted(results) == [False] * 9 + [True]


async def test_a_user_handle_is_made_once(store: Store, clock: FakeClock) -> None:
    user = await new_user(store, clock)
    assert await store.get_user_handle(user.id) is None
    handles = await asyncio.gather(
        *(
            store.get_or_create_user_handle(user.id, lambda: secrets.token_bytes(32))
            for _ in range(5)
        )
    )
    assert len(set(handles)) == 1
    assert await store.get_user_handle(user.id) == handles[0]


async def test_of_20_concurrent_uses_of_one_challenge_exactly_one_wins(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    challenge = new_challenge("mfa", user, clock)
    await store.create_webauthn_challenge(challenge)
    results = await asyncio.gather(
        *(
            store.consume_webauthn_challenge(challenge.challenge_hash, "mfa", user.id, clock())
            for _ in range(20)
        )
    )
    assert sorted(results) == [False] * 19 + [True]


async def test_a_challenge_serves_only_its_ceremony_and_user_until_it_expires(
    store: Store, clock: FakeClock
) -> None:
    ada, eve = await new_user(store, clock), await new_user(store, clock, "eve@example.com")
    bound = new_challenge("register", ada, clock)
    anonymous = new_challenge("login", None, clock)
    for challenge in (bound, anonymous):
        await store.create_webauthn_challenge(challenge)
    assert not await store.consume_webauthn_challenge(bound.challenge_hash, "mfa", ada.id, clock())
    assert not await store.consume_webauthn_challenge(
        bound.challenge_hash, "register", eve.id, clock()
    )
    assert not await store.consume_webauthn_challenge(
        bound.challenge_hash, "register", None, clock()
    )
    assert not await store.consume_webauthn_challenge(
        anonymous.challenge_hash, "login", ada.id, clock()
    )
    assert not await store.consume_webauthn_challenge("nul\x00", "login", None, clock())
    clock.advance(300)
    assert not await store.consume_webauthn_challenge(
        bound.challenge_hash, "register", ada.id, clock()
    )
    assert not await store.consume_webauthn_challenge(
        anonymous.challenge_hash, "login", None, clock()
    )


async def test_expired_challenges_are_pruned(store: Store, clock: FakeClock) -> None:
    live, old = new_challenge("login", None, clock), new_challenge("login", None, clock)
    await store.create_webauthn_challenge(replace(old, expires_at=clock() + 10))
    await store.create_webauthn_challenge(live)
    clock.advance(10)
    assert await store.prune_expired(clock(), session_idle=IDLE, session_absolute=ABSOLUTE) >= 1
    assert await store.consume_webauthn_challenge(live.challenge_hash, "login", None, clock())


async def test_deleting_a_user_deletes_its_passkeys_handle_and_challenges(
    store: Store, clock: FakeClock
) -> None:
    user = await new_user(store, clock)
    passkey = new_passkey(user, clock)
    await store.add_passkey(passkey)
    await store.get_or_create_user_handle(user.id, lambda: secrets.token_bytes(32))
    challenge = new_challenge("register", user, clock)
    await store.create_webauthn_challenge(challenge)
    assert await store.delete_user(user.id, clock()) is True
    assert await store.get_passkey_by_credential_id(passkey.credential_id) is None
    assert await store.get_user_handle(user.id) is None
    assert not await store.consume_webauthn_challenge(
        challenge.challenge_hash, "register", user.id, clock()
    )
