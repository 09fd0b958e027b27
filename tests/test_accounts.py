"""Unit tests of gatepass.accounts through the composition root, on real SQLite (in
tmp_path) and real PostgreSQL (tests/servers.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from sqlalchemy import text

from gatepass.accounts import MAX_EMAIL_LENGTH, normalise_email
from gatepass.authenticator import Identity
from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import (
    AuthenticationFailed,
    Conflict,
    DuplicateRecord,
    InvalidRefreshToken,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from gatepass.passwords import PasswordHasher
from gatepass.sessions import IssuedSession
from gatepass.stores.base import UserRecord
from gatepass.stores.sql import SqlStore
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD, FakeClock

NEW_PASSWORD = "a brand new passphrase"
IP = "192.0.2.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gp(
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    fast_hasher: PasswordHasher,
    database_url: str,
) -> AsyncIterator[Gatepass]:
    # Once on SQLite, once on PostgreSQL (tests/servers.py).
    settings = make_settings(database_url=database_url)
    instance = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)
    yield instance
    await instance.close()


async def register(gp: Gatepass, email: str = "ada@example.com") -> UserRecord:
    return await gp.accounts.register(email, PASSWORD)


async def web_login(
    gp: Gatepass, email: str = "ada@example.com", password: str = PASSWORD
) -> IssuedSession:
    user = await gp.accounts.verify_password_login(email, password, IP)
    return await gp.accounts.start_web_session(
        user, presented_cookie=None, ip=IP, user_agent="pytest"
    )


async def identity_of(gp: Gatepass, cookie: str) -> Identity:
    return await gp.authenticator.authenticate(None, cookie)


def hash_parameters(encoded: str) -> tuple[int, int, int]:
    match = re.match(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", encoded)
    assert match is not None
    m, t, p = (int(g) for g in match.groups())
    return m, t, p


# register ------------------------------------------------------------------


@pytest.mark.anyio
async def test_register_normalises_email(gp: Gatepass) -> None:
    user = await register(gp, "  Ada.Lovelace@Example.COM\t")
    assert user.email == "ada.lovelace@example.com"
    stored = await gp.store.get_user_by_email("ada.lovelace@example.com")
    assert stored is not None
    assert stored.id == user.id


@pytest.mark.anyio
async def test_register_gives_user_role_and_argon2id_hash(gp: Gatepass) -> None:
    user = await register(gp)
    assert user.roles == ("user",)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


@pytest.mark.anyio
@pytest.mark.parametrize(
    "variant",
    [
        "ada@example.com",
        "ADA@EXAMPLE.COM",
        "Ada@Example.com",
        " ada@example.com ",
    ],
)
async def test_register_refuses_duplicate_email_including_case_variants(
    gp: Gatepass, variant: str
) -> None:
    await register(gp, "ada@example.com")
    with pytest.raises(Conflict):
        await register(gp, variant)


@pytest.mark.anyio
async def test_register_refuses_duplicate_in_other_unicode_normal_form(gp: Gatepass) -> None:
    await register(gp, "jos\u00e9@example.com")
    with pytest.raises(Conflict):
        await register(gp, "jose\u0301@example.com")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "ada.example.com",
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada@example",
        "ada@.example.com",
        "ada@example..com",
        "ada@example.com.",
        "ada\x00@example.com",
        "ada\n@example.com",
        "ada\x7f@example.com",
        "\u202eada@example.com",
        "ada\u202e@example.com",
        "ada\u200b@example.com",
        "ada\ud800@example.com",
        "ada@exa\udfffmple.com",
        "a da@example.com",
        "a" * (MAX_EMAIL_LENGTH - len("@example.com") + 1) + "@example.com",
        "a" * 10_000 + "@example.com",
    ],
)
async def test_register_refuses_invalid_email(gp: Gatepass, email: str) -> None:
    with pytest.raises(InvalidRequest):
        await gp.accounts.register(email, PASSWORD)
    assert isinstance(gp.store, SqlStore)
    async with gp.store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT COUNT(*) FROM gatepass_users"))).scalar() == 0


@pytest.mark.anyio
async def test_register_accepts_email_of_254_characters(gp: Gatepass) -> None:
    # The longest address: a 64-octet local part and a domain of 63-octet labels.
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert len(email) == MAX_EMAIL_LENGTH == 254
    assert (await register(gp, email)).email == email


@pytest.mark.parametrize("email", ["ada\ud800@example.com", "\u202e@example.com"])
def test_surrogate_or_bidi_in_email_refused_as_invalid_characters(email: str) -> None:
    with pytest.raises(ValueError, match="invalid characters") as info:
        normalise_email(email)
    str(info.value).encode("utf-8")  # the message itself is safe to log


@pytest.mark.anyio
@pytest.mark.parametrize("password", ["short", "x" * 1025, "abcdefgh\ud800"])
async def test_register_refuses_bad_password_without_echoing_it(
    gp: Gatepass, password: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await gp.accounts.register("ada@example.com", password)
    assert password not in str(info.value)
    assert password[:5] not in info.value.detail
    assert await gp.store.get_user_by_email("ada@example.com") is None


# login ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_login_with_correct_password_returns_user(gp: Gatepass) -> None:
    user = await register(gp)
    logged_in = await gp.accounts.verify_password_login(" ADA@example.com ", PASSWORD, IP)
    assert logged_in.id == user.id


@pytest.mark.anyio
async def test_unknown_email_and_wrong_password_fail_identically(gp: Gatepass) -> None:
    await register(gp)
    failures = []
    for email, password in [
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", "wrong password"),
        ("not an email", PASSWORD),
        ("ada@example.com", "short"),
    ]:
        with pytest.raises(AuthenticationFailed) as info:
            await gp.accounts.verify_password_login(email, password, IP)
        failures.append((type(info.value), str(info.value), info.value.detail, info.value.status))
    assert len(set(failures)) == 1
    assert failures[0][3] == 401


@pytest.mark.anyio
async def test_unknown_email_runs_dummy_verify(
    gp: Gatepass, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = gp.hasher.dummy_verify_sync

    def spy(password: str) -> object:
        calls.append("dummy")
        return real(password)

    monkeypatch.setattr(gp.hasher, "dummy_verify_sync", spy)
    with pytest.raises(AuthenticationFailed):
        await gp.accounts.verify_password_login("nobody@example.com", PASSWORD, IP)
    assert calls == ["dummy"]


@pytest.mark.anyio
async def test_login_locked_after_max_failures_even_with_correct_password(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    gp = await Gatepass.open(
        make_settings(login_max_failures="2", login_lockout="30"), clock=clock, hasher=fast_hasher
    )
    try:
        await register(gp)
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                await gp.accounts.verify_password_login("ada@example.com", "wrong password", IP)
        with pytest.raises(RateLimited) as info:
            await gp.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
        assert info.value.retry_after == 30
        with pytest.raises(RateLimited):  # the lockout is per account, whatever case
            await gp.accounts.verify_password_login("ADA@example.com", PASSWORD, "198.51.100.1")
        clock.advance(30)
        assert (await gp.accounts.verify_password_login("ada@example.com", PASSWORD, IP)).email
    finally:
        await gp.close()


@pytest.mark.anyio
async def test_rehash_on_login_when_parameters_changed(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    weak = PasswordHasher(**FAST_HASHER_PARAMS)
    strong = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    first = await Gatepass.open(make_settings(), clock=clock, hasher=weak)
    try:
        user = await register(first)
    finally:
        await first.close()
    assert hash_parameters(user.password_hash) == (1024, 1, 1)

    second = await Gatepass.open(make_settings(), clock=clock, hasher=strong)
    try:
        await second.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
        stored = await second.store.get_user_by_email("ada@example.com")
        assert stored is not None
        assert stored.password_hash != user.password_hash
        assert hash_parameters(stored.password_hash) == (2048, 2, 1)
        result = strong.verify_sync(stored.password_hash, PASSWORD)
        assert result.ok
        assert not result.needs_rehash
        # the new hash still logs in
        await second.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
    finally:
        await second.close()


@pytest.mark.anyio
async def test_no_rehash_on_login_when_parameters_unchanged(gp: Gatepass) -> None:
    user = await register(gp)
    await gp.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
    stored = await gp.store.get_user_by_email("ada@example.com")
    assert stored is not None
    assert stored.password_hash == user.password_hash


@pytest.mark.anyio
async def test_no_rehash_on_failed_login(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    first = await Gatepass.open(
        make_settings(), clock=clock, hasher=PasswordHasher(**FAST_HASHER_PARAMS)
    )
    try:
        user = await register(first)
    finally:
        await first.close()
    strong = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    second = await Gatepass.open(make_settings(), clock=clock, hasher=strong)
    try:
        with pytest.raises(AuthenticationFailed):
            await second.accounts.verify_password_login("ada@example.com", "wrong password", IP)
        stored = await second.store.get_user_by_email("ada@example.com")
        assert stored is not None
        assert stored.password_hash == user.password_hash
    finally:
        await second.close()


# web sessions --------------------------------------------------------------


@pytest.mark.anyio
async def test_start_web_session_destroys_presented_session(gp: Gatepass) -> None:
    user = await register(gp)
    planted = await web_login(gp)
    fresh = await gp.accounts.start_web_session(
        user, presented_cookie=planted.cookie_value, ip=IP, user_agent="pytest"
    )
    assert await gp.sessions.load(planted.cookie_value) is None
    assert await gp.sessions.load(fresh.cookie_value) is not None
    assert fresh.record.handle != planted.record.handle


@pytest.mark.anyio
async def test_list_sessions_marks_current_and_shows_no_secret(gp: Gatepass) -> None:
    await register(gp)
    first = await web_login(gp)
    second = await web_login(gp)
    views = await gp.accounts.list_sessions(await identity_of(gp, second.cookie_value))
    assert {v.id for v in views} == {first.record.handle, second.record.handle}
    assert [v.id for v in views if v.current] == [second.record.handle]
    text = repr(views)
    for issued in (first, second):
        assert issued.cookie_value.rpartition(".")[0] not in text
        assert issued.record.id_hash not in text
        assert issued.record.csrf_token not in text


@pytest.mark.anyio
async def test_end_session_of_another_user_is_not_found_and_leaves_it(gp: Gatepass) -> None:
    await register(gp, "ada@example.com")
    await register(gp, "bob@example.com")
    ada = await web_login(gp, "ada@example.com")
    bob = await web_login(gp, "bob@example.com")
    with pytest.raises(NotFound):
        await gp.accounts.end_session(await identity_of(gp, ada.cookie_value), bob.record.handle)
    assert await gp.sessions.load(bob.cookie_value) is not None


@pytest.mark.anyio
async def test_logout_all_ends_every_session_of_the_user_only(gp: Gatepass) -> None:
    await register(gp, "ada@example.com")
    await register(gp, "bob@example.com")
    ada1 = await web_login(gp, "ada@example.com")
    ada2 = await web_login(gp, "ada@example.com")
    bob = await web_login(gp, "bob@example.com")
    await gp.accounts.logout_all(await identity_of(gp, ada1.cookie_value))
    assert await gp.sessions.load(ada1.cookie_value) is None
    assert await gp.sessions.load(ada2.cookie_value) is None
    assert await gp.sessions.load(bob.cookie_value) is not None


# password change -----------------------------------------------------------


@pytest.mark.anyio
async def test_change_password_ends_other_sessions_and_regenerates_current(
    gp: Gatepass, clock: FakeClock
) -> None:
    await register(gp)
    current = await web_login(gp)
    other = await web_login(gp)
    clock.advance(5)
    identity = await identity_of(gp, current.cookie_value)
    issued = await gp.accounts.change_password(identity, PASSWORD, NEW_PASSWORD)
    assert issued is not None
    assert await gp.sessions.load(current.cookie_value) is None
    assert await gp.sessions.load(other.cookie_value) is None
    active = await gp.sessions.load(issued.cookie_value)
    assert active is not None
    assert active.record.handle == current.record.handle
    assert active.record.created_at == current.record.created_at
    assert active.record.csrf_token != current.record.csrf_token
    remaining = await gp.store.list_sessions(identity.user.id)
    assert [r.handle for r in remaining] == [current.record.handle]


@pytest.mark.anyio
async def test_change_password_replaces_password(gp: Gatepass) -> None:
    await register(gp)
    current = await web_login(gp)
    await gp.accounts.change_password(
        await identity_of(gp, current.cookie_value), PASSWORD, NEW_PASSWORD
    )
    with pytest.raises(AuthenticationFailed):
        await gp.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
    assert await gp.accounts.verify_password_login("ada@example.com", NEW_PASSWORD, IP)


@pytest.mark.anyio
async def test_change_password_leaves_other_users_sessions(gp: Gatepass) -> None:
    await register(gp, "ada@example.com")
    await register(gp, "bob@example.com")
    ada = await web_login(gp, "ada@example.com")
    bob = await web_login(gp, "bob@example.com")
    await gp.accounts.change_password(
        await identity_of(gp, ada.cookie_value), PASSWORD, NEW_PASSWORD
    )
    assert await gp.sessions.load(bob.cookie_value) is not None


@pytest.mark.anyio
async def test_change_password_with_wrong_current_password_changes_nothing(gp: Gatepass) -> None:
    user = await register(gp)
    current = await web_login(gp)
    other = await web_login(gp)
    with pytest.raises(AuthenticationFailed):
        await gp.accounts.change_password(
            await identity_of(gp, current.cookie_value), "wrong password", NEW_PASSWORD
        )
    stored = await gp.store.get_user_by_email("ada@example.com")
    assert stored is not None
    assert stored.password_hash == user.password_hash
    assert await gp.sessions.load(current.cookie_value) is not None
    assert await gp.sessions.load(other.cookie_value) is not None


@pytest.mark.anyio
@pytest.mark.parametrize("new_password", ["short", "x" * 1025, "abcdefgh\ud800"])
async def test_change_password_refuses_invalid_new_password(
    gp: Gatepass, new_password: str
) -> None:
    user = await register(gp)
    current = await web_login(gp)
    with pytest.raises(InvalidRequest) as info:
        await gp.accounts.change_password(
            await identity_of(gp, current.cookie_value), PASSWORD, new_password
        )
    assert new_password not in str(info.value)
    stored = await gp.store.get_user_by_email("ada@example.com")
    assert stored is not None
    assert stored.password_hash == user.password_hash
    assert await gp.sessions.load(current.cookie_value) is not None


@pytest.mark.anyio
async def test_password_change_failing_at_its_last_step_leaves_no_old_credential_alive(
    gp: Gatepass,
) -> None:
    """Kill first, grant last: the replacement session is the last write, so when it
    fails every old credential is already dead and the new password is in force."""
    user = await register(gp, "ada@example.com")
    await register(gp, "bob@example.com")
    ada = await web_login(gp, "ada@example.com")
    ada_other = await web_login(gp, "ada@example.com")
    bob = await web_login(gp, "bob@example.com")
    pair = await gp.accounts.start_token_family(user, ip=IP, user_agent=None)
    identity = await identity_of(gp, ada.cookie_value)
    # The replacement session keeps the caller's handle; make it collide with Bob's
    # session so that its insert, the last step, fails.
    assert identity.session is not None
    colliding = replace(identity, session=replace(identity.session, handle=bob.record.handle))
    with pytest.raises(DuplicateRecord):
        await gp.accounts.change_password(colliding, PASSWORD, NEW_PASSWORD)
    assert await gp.sessions.load(ada.cookie_value) is None
    assert await gp.sessions.load(ada_other.cookie_value) is None
    assert await gp.store.list_sessions(user.id) == []
    with pytest.raises(InvalidRefreshToken):
        await gp.refresh_tokens.rotate(pair.refresh_token)
    with pytest.raises(AuthenticationFailed):
        await gp.accounts.verify_password_login("ada@example.com", PASSWORD, IP)
    # The retry the user makes: signing in with the new password works.
    assert await gp.accounts.verify_password_login("ada@example.com", NEW_PASSWORD, IP)
    assert await gp.sessions.load(bob.cookie_value) is not None
