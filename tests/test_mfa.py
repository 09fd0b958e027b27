"""TOTP and recovery codes (gatepass.mfa) over a real SQLite store, with the
injected clock: time steps, replays, junk input, single-use codes, and the
secrets sealed at rest (what a copy of the database holds)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest

from gatepass.errors import Conflict, InvalidRequest
from gatepass.metrics import Metrics
from gatepass.mfa import (
    RECOVERY_CODE_COUNT,
    TOTP_STEP_SECONDS,
    Factors,
    TotpSetup,
    recovery_code,
    totp_code,
)
from gatepass.stores.base import UserRecord
from gatepass.stores.sql import SqlStore
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

SECRETS = ["session-secret-one-for-tests"]
ISSUER = "auth.example.com"
RECOVERY_CODE_SHAPE = re.compile(r"^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gatepass.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{db_path}")
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def factors(store: SqlStore, metrics: Metrics, clock: FakeClock) -> Factors:
    return Factors(store, SECRETS, metrics, clock, issuer_name=ISSUER)


@pytest.fixture
async def user(store: SqlStore, clock: FakeClock) -> UserRecord:
    return await store.create_user("ada@example.com", "$argon2id$stand-in", ["user"], clock())


def code_at(secret: str, clock: FakeClock, steps: int = 0) -> str:
    """The code an authenticator app shows ``steps`` time steps from now."""
    return pyotp.TOTP(secret).at(clock() + steps * TOTP_STEP_SECONDS)


def other_than(code: str) -> str:
    """A well-formed code that is not ``code``."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def activated(factors: Factors, user: UserRecord, clock: FakeClock) -> tuple[str, list[str]]:
    """Set up and confirm TOTP; the secret and the recovery codes. The clock moves
    on one step, so the confirming code's step is behind."""
    setup = await factors.begin_totp(user)
    codes = await factors.confirm_totp(user.id, code_at(setup.secret, clock))
    clock.advance(TOTP_STEP_SECONDS)
    return setup.secret, codes


def events(metrics: Metrics, factor: str, event: str) -> float:
    value = metrics.registry.get_sample_value(
        "gatepass_factor_events_total", {"factor": factor, "event": event}
    )
    return value or 0.0


# setup ------------------------------------------------------------------------------


async def test_setup_gives_the_secret_its_otpauth_uri_and_a_qr_code(
    factors: Factors, user: UserRecord
) -> None:
    setup = await factors.begin_totp(user)
    assert re.fullmatch(r"[A-Z2-7]{32}", setup.secret)  # 160 bits, unpadded, upper case
    parsed = pyotp.parse_uri(setup.otpauth_uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == setup.secret
    assert parsed.issuer == ISSUER
    assert parsed.name == user.email
    assert (parsed.digits, parsed.interval, parsed.digest().name) == (6, 30, "sha1")
    assert setup.qr_svg.startswith("<svg")
    assert setup.qr_svg.rstrip().endswith("</svg>")


async def test_setup_shows_no_secret_in_its_repr(factors: Factors, user: UserRecord) -> None:
    setup = await factors.begin_totp(user)
    assert setup.secret not in repr(setup)
    assert repr(setup) == "TotpSetup()"
    assert isinstance(setup, TotpSetup)


async def test_a_setup_is_pending_until_a_correct_code_confirms_it(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    setup = await factors.begin_totp(user)
    assert not await factors.has_totp(user.id)
    # A pending secret is no factor: its codes prove nothing yet.
    assert not await factors.verify_totp(user.id, code_at(setup.secret, clock))
    with pytest.raises(InvalidRequest) as wrong:
        await factors.confirm_totp(user.id, other_than(code_at(setup.secret, clock)))
    assert wrong.value.status == 422
    assert not await factors.has_totp(user.id)
    codes = await factors.confirm_totp(user.id, code_at(setup.secret, clock))
    assert len(codes) == RECOVERY_CODE_COUNT
    assert await factors.has_totp(user.id)
    summary = await factors.summary(user.id)
    assert (summary.totp, summary.recovery_codes_left) == (True, RECOVERY_CODE_COUNT)


async def test_a_new_setup_replaces_a_pending_one(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    first = await factors.begin_totp(user)
    second = await factors.begin_totp(user)
    assert first.secret != second.secret
    with pytest.raises(InvalidRequest):
        await factors.confirm_totp(user.id, code_at(first.secret, clock))
    assert await factors.confirm_totp(user.id, code_at(second.secret, clock))


async def test_an_active_totp_cannot_be_set_up_again_without_removing_it(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    with pytest.raises(Conflict) as refused:
        await factors.begin_totp(user)
    assert refused.value.status == 409
    # The active secret is untouched.
    assert await factors.verify_totp(user.id, code_at(secret, clock))
    with pytest.raises(InvalidRequest):
        await factors.confirm_totp(user.id, code_at(secret, clock, 1))


async def test_confirming_without_a_pending_setup_is_refused(
    factors: Factors, user: UserRecord
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await factors.confirm_totp(user.id, "123456")
    assert refused.value.status == 422


# time steps and replays ---------------------------------------------------------------


async def test_codes_of_the_previous_and_next_step_are_accepted_and_no_further(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    clock.advance(10 * TOTP_STEP_SECONDS)
    assert not await factors.verify_totp(user.id, code_at(secret, clock, -2))
    assert not await factors.verify_totp(user.id, code_at(secret, clock, 2))
    assert await factors.verify_totp(user.id, code_at(secret, clock, -1))
    assert await factors.verify_totp(user.id, code_at(secret, clock, 1))


async def test_replayed_totp_code_in_the_same_window_is_refused(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    code = code_at(secret, clock)
    assert await factors.verify_totp(user.id, code)
    clock.advance(5)
    assert not await factors.verify_totp(user.id, code)


async def test_totp_code_of_a_step_before_the_last_accepted_is_refused(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    earlier = code_at(secret, clock, -1)
    assert await factors.verify_totp(user.id, code_at(secret, clock, 1))
    # Still within the skew window, but its step is behind the accepted one.
    assert not await factors.verify_totp(user.id, earlier)
    assert not await factors.verify_totp(user.id, code_at(secret, clock))


async def test_the_confirming_code_cannot_be_replayed_as_a_sign_in_code(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    setup = await factors.begin_totp(user)
    code = code_at(setup.secret, clock)
    await factors.confirm_totp(user.id, code)
    assert not await factors.verify_totp(user.id, code)


async def test_racing_uses_of_one_totp_code_let_exactly_one_through(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    code = code_at(secret, clock)
    results = await asyncio.gather(*(factors.verify_totp(user.id, code) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


@pytest.mark.parametrize(
    "junk",
    [
        "",
        " ",
        "12345",
        "1234567",
        "abcdef",
        "12345\x00",
        "+12345",
        "12345.",
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
        "1" * 100_000,
        "\ud800" * 6,  # lone surrogates
    ],
)
async def test_junk_totp_codes_are_refused_without_raising(
    factors: Factors, user: UserRecord, clock: FakeClock, junk: str
) -> None:
    await activated(factors, user, clock)
    assert not await factors.verify_totp(user.id, junk)
    assert not await factors.use_recovery_code(user.id, junk)


async def test_unicode_digits_of_the_right_code_are_refused(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    code = code_at(secret, clock)
    full_width = "".join(chr(0xFF10 + int(d)) for d in code)
    assert not await factors.verify_totp(user.id, full_width)
    assert await factors.verify_totp(user.id, code)


async def test_spaces_and_hyphens_in_a_typed_code_are_ignored(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    code = code_at(secret, clock)
    assert await factors.verify_totp(user.id, f" {code[:3]} -{code[3:]} ")


def test_code_normal_forms() -> None:
    assert totp_code("123 456") == "123456"
    assert totp_code("123-456") == "123456"
    assert totp_code("12345") is None
    assert recovery_code("ABCDE-FGHJK") == "abcdefghjk"
    # Misread letters are read as the digits they look like.
    assert recovery_code("oOiIl-L0000") == "0011110000"
    assert recovery_code("abcde-fghju") is None  # no U in the alphabet


# recovery codes ----------------------------------------------------------------------


async def test_recovery_codes_are_ten_distinct_readable_codes(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    assert len(set(codes)) == RECOVERY_CODE_COUNT == 10
    assert all(RECOVERY_CODE_SHAPE.fullmatch(code) for code in codes)


async def test_used_recovery_code_is_refused(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    assert await factors.use_recovery_code(user.id, codes[0])
    assert not await factors.use_recovery_code(user.id, codes[0])
    assert (await factors.summary(user.id)).recovery_codes_left == 9


async def test_a_recovery_code_is_read_in_any_case_with_or_without_its_hyphen(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    assert await factors.use_recovery_code(user.id, codes[0].upper().replace("-", ""))
    assert await factors.use_recovery_code(user.id, f" {codes[1][:3]} {codes[1][3:]} ")
    assert not await factors.use_recovery_code(user.id, codes[0])


async def test_racing_uses_of_one_recovery_code_let_exactly_one_through(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    results = await asyncio.gather(
        *(factors.use_recovery_code(user.id, codes[2]) for _ in range(10))
    )
    assert sorted(results) == [False] * 9 + [True]


async def test_regenerated_recovery_codes_kill_the_old_set(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, old = await activated(factors, user, clock)
    await factors.use_recovery_code(user.id, old[0])
    new = await factors.regenerate_recovery_codes(user.id)
    assert not set(new) & set(old)
    assert (await factors.summary(user.id)).recovery_codes_left == 10
    for code in old[1:]:
        assert not await factors.use_recovery_code(user.id, code)
    assert await factors.use_recovery_code(user.id, new[0])


async def test_recovery_codes_need_an_active_totp(factors: Factors, user: UserRecord) -> None:
    with pytest.raises(Conflict):
        await factors.regenerate_recovery_codes(user.id)
    await factors.begin_totp(user)
    with pytest.raises(Conflict):
        await factors.regenerate_recovery_codes(user.id)


async def test_another_users_recovery_code_is_refused(
    factors: Factors, store: SqlStore, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    bob = await store.create_user("bob@example.com", "$argon2id$stand-in", ["user"], clock())
    await activated(factors, bob, clock)
    assert not await factors.use_recovery_code(bob.id, codes[0])
    assert await factors.use_recovery_code(user.id, codes[0])


# removal -------------------------------------------------------------------------------


async def test_removing_totp_needs_a_correct_code_and_takes_the_recovery_codes(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    with pytest.raises(InvalidRequest) as wrong:
        await factors.remove_totp(user.id, "not a code")
    assert wrong.value.status == 422
    assert await factors.has_totp(user.id)
    await factors.remove_totp(user.id, code_at(secret, clock))
    summary = await factors.summary(user.id)
    assert (summary.totp, summary.recovery_codes_left) == (False, 0)
    with pytest.raises(InvalidRequest):
        await factors.remove_totp(user.id, code_at(secret, clock, 1))
    # Removed: it can be set up again.
    assert await factors.begin_totp(user)


async def test_a_recovery_code_removes_totp_once(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    _, codes = await activated(factors, user, clock)
    await factors.remove_totp(user.id, codes[4])
    assert not await factors.has_totp(user.id)


async def test_replayed_code_cannot_remove_totp(
    factors: Factors, user: UserRecord, clock: FakeClock
) -> None:
    secret, _ = await activated(factors, user, clock)
    code = code_at(secret, clock)
    assert await factors.verify_totp(user.id, code)
    with pytest.raises(InvalidRequest):
        await factors.remove_totp(user.id, code)
    assert await factors.has_totp(user.id)


# sealed at rest -------------------------------------------------------------------------


def raw_totp_row(db_path: Path, user_id: str) -> tuple[object, ...]:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT * FROM gatepass_totp WHERE user_id = ?", (user_id,)).fetchone()
    conn.close()
    assert row is not None
    return tuple(row)


def database_bytes(db_path: Path) -> bytes:
    """Every byte of the database as a copy of its files would hold them."""
    files = [db_path, db_path.with_name(db_path.name + "-wal")]
    return b"".join(path.read_bytes() for path in files if path.exists())


def forms_of(secret: str) -> list[bytes]:
    """The secret as text, in lower case, and as its raw key bytes."""
    return [secret.encode(), secret.lower().encode(), base64.b32decode(secret)]


async def test_database_dump_yields_no_totp_secret_or_recovery_code(
    factors: Factors, user: UserRecord, clock: FakeClock, db_path: Path
) -> None:
    secret, codes = await activated(factors, user, clock)
    row = raw_totp_row(db_path, user.id)
    text = repr(row).encode()
    dump = database_bytes(db_path)
    for form in forms_of(secret):
        assert form not in text
        assert form not in dump
    for code in codes:
        for form in (code, code.replace("-", ""), code.upper()):
            assert form.encode() not in dump


async def test_each_seal_of_one_secret_differs(
    factors: Factors, user: UserRecord, db_path: Path
) -> None:
    await factors.begin_totp(user)
    first = raw_totp_row(db_path, user.id)
    await factors.begin_totp(user)
    assert raw_totp_row(db_path, user.id)[1] != first[1]


async def test_rotating_session_secrets_keeps_sealed_secrets_and_codes_readable(
    store: SqlStore, metrics: Metrics, user: UserRecord, clock: FakeClock
) -> None:
    before = Factors(store, ["old-secret"], metrics, clock, issuer_name=ISSUER)
    secret, codes = await activated(before, user, clock)
    rotated = Factors(store, ["new-secret", "old-secret"], metrics, clock, issuer_name=ISSUER)
    assert await rotated.verify_totp(user.id, code_at(secret, clock))
    assert await rotated.use_recovery_code(user.id, codes[0])
    # Once the old secret is no longer listed, what it sealed no longer opens.
    dropped = Factors(store, ["new-secret"], metrics, clock, issuer_name=ISSUER)
    assert not await dropped.verify_totp(user.id, code_at(secret, clock, 1))
    assert not await dropped.use_recovery_code(user.id, codes[1])


async def test_sealed_secret_moved_to_another_users_row_is_refused(
    factors: Factors, store: SqlStore, user: UserRecord, clock: FakeClock, db_path: Path
) -> None:
    secret, _ = await activated(factors, user, clock)
    mallory = await store.create_user("mallory@example.com", "$argon2id$x", ["user"], clock())
    await activated(factors, mallory, clock)
    # An attacker who can write the database copies Ada's sealed secret to their row.
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE gatepass_totp SET sealed_secret = "
            "(SELECT sealed_secret FROM gatepass_totp WHERE user_id = ?), last_step = 0 "
            "WHERE user_id = ?",
            (user.id, mallory.id),
        )
    conn.close()
    assert not await factors.verify_totp(mallory.id, code_at(secret, clock))


async def test_tampered_sealed_secret_is_refused(
    factors: Factors, user: UserRecord, clock: FakeClock, db_path: Path
) -> None:
    secret, _ = await activated(factors, user, clock)
    sealed = str(raw_totp_row(db_path, user.id)[1])
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE gatepass_totp SET sealed_secret = ?", (flipped,))
    conn.close()
    assert not await factors.verify_totp(user.id, code_at(secret, clock))


# audit and metrics ----------------------------------------------------------------------


async def test_audit_and_metrics_count_factor_events_without_secrets_or_codes(
    factors: Factors,
    user: UserRecord,
    clock: FakeClock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        secret, codes = await activated(factors, user, clock)
        good = code_at(secret, clock)
        assert await factors.verify_totp(user.id, good)
        assert not await factors.verify_totp(user.id, good)
        assert await factors.use_recovery_code(user.id, codes[0])
        assert not await factors.use_recovery_code(user.id, codes[0])
        new = await factors.regenerate_recovery_codes(user.id)
        await factors.remove_totp(user.id, new[0])
    assert events(metrics, "totp", "added") == 1
    assert events(metrics, "totp", "used") == 1
    assert events(metrics, "totp", "failed") == 1
    assert events(metrics, "totp", "removed") == 1
    assert events(metrics, "recovery_code", "used") == 2
    assert events(metrics, "recovery_code", "failed") == 1
    assert events(metrics, "recovery_code", "regenerated") == 1
    audit = [r.getMessage() for r in caplog.records if r.name == "gatepass.audit"]
    assert any("added" in line and user.id in line for line in audit)
    assert any("removed" in line and user.id in line for line in audit)
    assert any("regenerated" in line for line in audit)
    assert any("recovery code used" in line for line in audit)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret_text in [secret, secret.lower(), good, *codes, *new]:
        assert secret_text not in logged
        assert secret_text.replace("-", "") not in logged
    assert secret not in metrics.render().decode()
