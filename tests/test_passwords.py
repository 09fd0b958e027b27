"""Unit tests of gatepass.passwords: argon2id parameters, normalisation, policy, threads."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import argon2
import pytest

import gatepass
from gatepass import errors
from gatepass.errors import InvalidRequest
from gatepass.passwords import (
    MAX_PASSWORD_LENGTH,
    PasswordHasher,
    PasswordPolicyError,
    check_password_policy,
    common_passwords,
    normalise_password,
)
from tests.conftest import FAST_HASHER_PARAMS, PASSWORD

ENCODED = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def parameters(encoded: str) -> tuple[int, int, int]:
    match = ENCODED.match(encoded)
    assert match is not None, encoded
    m, t, p = (int(g) for g in match.groups())
    return m, t, p


# production parameters -----------------------------------------------------


def test_default_hash_is_argon2id_with_at_least_owasp_minimum() -> None:
    encoded = PasswordHasher().hash_sync(PASSWORD)
    memory_kib, time_cost, parallelism = parameters(encoded)
    assert memory_kib >= 19 * 1024
    assert time_cost >= 2
    assert parallelism >= 1


def test_default_hash_verifies_and_needs_no_rehash() -> None:
    hasher = PasswordHasher()
    result = hasher.verify_sync(hasher.hash_sync(PASSWORD), PASSWORD)
    assert result.ok
    assert not result.needs_rehash


def test_hashes_are_salted() -> None:
    hasher = PasswordHasher(**FAST_HASHER_PARAMS)
    assert hasher.hash_sync(PASSWORD) != hasher.hash_sync(PASSWORD)


def test_hash_does_not_contain_password(fast_hasher: PasswordHasher) -> None:
    assert PASSWORD not in fast_hasher.hash_sync(PASSWORD)


# verification --------------------------------------------------------------


def test_correct_password_verifies(fast_hasher: PasswordHasher) -> None:
    assert fast_hasher.verify_sync(fast_hasher.hash_sync(PASSWORD), PASSWORD).ok


def test_wrong_password_fails(fast_hasher: PasswordHasher) -> None:
    encoded = fast_hasher.hash_sync(PASSWORD)
    assert not fast_hasher.verify_sync(encoded, PASSWORD + "!").ok
    assert not fast_hasher.verify_sync(encoded, PASSWORD.upper()).ok


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$garbage"])
def test_malformed_stored_hash_fails_without_raising(
    fast_hasher: PasswordHasher, stored: str
) -> None:
    assert not fast_hasher.verify_sync(stored, PASSWORD).ok


@pytest.mark.parametrize(
    "candidate", ["short", "", "x" * (MAX_PASSWORD_LENGTH + 1), "abcdefg\ud800"]
)
def test_candidate_outside_policy_fails_verification_without_raising(
    fast_hasher: PasswordHasher, candidate: str
) -> None:
    assert not fast_hasher.verify_sync(fast_hasher.hash_sync(PASSWORD), candidate).ok


def test_dummy_verify_fails(fast_hasher: PasswordHasher) -> None:
    for candidate in (PASSWORD, "gatepass dummy password for timing", "not the dummy password"):
        result = fast_hasher.dummy_verify_sync(candidate)
        assert not result.ok
        assert not result.needs_rehash


def test_dummy_verify_runs_a_real_argon2_verification(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_hasher.dummy_verify_sync(PASSWORD)  # the dummy hash is made on first use
    calls: list[str] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
        calls.append("verify")
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    assert not fast_hasher.dummy_verify_sync(PASSWORD).ok
    assert calls == ["verify"]


# rehash --------------------------------------------------------------------


def test_needs_rehash_when_hash_made_with_weaker_parameters() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    strong = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    result = strong.verify_sync(weak.hash_sync(PASSWORD), PASSWORD)
    assert result.ok
    assert result.needs_rehash


def test_no_rehash_needed_with_same_parameters(fast_hasher: PasswordHasher) -> None:
    result = fast_hasher.verify_sync(fast_hasher.hash_sync(PASSWORD), PASSWORD)
    assert result.ok
    assert not result.needs_rehash


def test_wrong_password_never_asks_for_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    strong = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    result = strong.verify_sync(weak.hash_sync(PASSWORD), "wrong password")
    assert not result.ok
    assert not result.needs_rehash


# normalisation and policy --------------------------------------------------


def test_full_width_password_verifies_against_ascii(fast_hasher: PasswordHasher) -> None:
    # U+FF01..U+FF5E are the full-width forms of ASCII 0x21..0x7E; U+3000 is a full-width space.
    full_width = "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) for c in PASSWORD)
    assert full_width != PASSWORD
    assert full_width.startswith("\uff43\uff4f")  # c, o
    assert normalise_password(full_width) == PASSWORD
    assert fast_hasher.verify_sync(fast_hasher.hash_sync(PASSWORD), full_width).ok
    assert fast_hasher.verify_sync(fast_hasher.hash_sync(full_width), PASSWORD).ok


def test_composed_and_decomposed_accents_verify_alike(fast_hasher: PasswordHasher) -> None:
    composed = "caf\u00e9-au-lait"
    decomposed = "cafe\u0301-au-lait"
    assert fast_hasher.verify_sync(fast_hasher.hash_sync(composed), decomposed).ok


def uncommon(length: int) -> str:
    """A password of ``length`` typed characters that is on no list."""
    return ("Zq9#kP2!vL" * 103)[:length]


@pytest.mark.parametrize("length", [8, 9, 100, 1024])
def test_password_lengths_8_to_1024_accepted(length: int) -> None:
    assert normalise_password(uncommon(length)) == uncommon(length)


@pytest.mark.parametrize("length", [0, 1, 7, 1025, 10_000])
def test_password_lengths_outside_8_to_1024_rejected(length: int) -> None:
    with pytest.raises(PasswordPolicyError, match="8 to 1024 characters"):
        normalise_password(uncommon(length))


def test_length_counts_typed_characters_that_nfkc_merges() -> None:
    # Eight typed code points, four characters once NFKC composes e + U+0301.
    decomposed = "e\u0301" * 4
    assert len(decomposed) == 8
    assert normalise_password(decomposed) == "\u00e9" * 4


def test_length_counts_typed_characters_that_nfkc_expands() -> None:
    # U+FDFA is one typed code point that NFKC expands to 18 characters.
    assert len(normalise_password(uncommon(7) + "\ufdfa")) == 7 + 18
    with pytest.raises(PasswordPolicyError):
        normalise_password("\ufdfa" * 7)
    assert len(normalise_password("\ufdfa" * 1024)) == 18 * 1024
    with pytest.raises(PasswordPolicyError):
        normalise_password("\ufdfa" * 1025)


def test_common_password_list_is_bundled_with_at_least_ten_thousand_entries() -> None:
    listed = common_passwords()
    assert len(listed) >= 10_000
    assert {"password", "12345678", "qwerty", "iloveyou"} <= listed
    assert common_passwords() is listed  # read once


@pytest.mark.parametrize(
    "password",
    # On the list in every spelling: case, full-width forms, surrounding spaces.
    [
        "password",
        "PassWord",
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44",
        " password ",
        "12345678",
    ],
)
def test_common_password_is_refused_in_any_spelling(password: str) -> None:
    with pytest.raises(PasswordPolicyError, match="commonly used") as info:
        check_password_policy(password)
    # One fixed message whatever the password: nothing of it is echoed.
    assert str(info.value) == "password is on the list of commonly used passwords; choose another"


@pytest.mark.parametrize("password", [" " * 8, "\t" * 10, "\u3000" * 8, " \n" * 6])
def test_white_space_only_password_is_refused(password: str) -> None:
    with pytest.raises(PasswordPolicyError, match="white space"):
        check_password_policy(password)


def test_hashing_applies_no_policy_so_older_passwords_still_verify() -> None:
    # "password" was accepted before the list existed; its owner must still sign in
    # (and be rehashed when the parameters change), not be refused at login.
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    strong = PasswordHasher(time_cost=1, memory_cost=2048, parallelism=1)
    result = strong.verify_sync(weak.hash_sync("password"), "password")
    assert result.ok
    assert result.needs_rehash
    assert strong.verify_sync(strong.hash_sync("password"), "password").ok


def test_hash_sync_refuses_over_long_password(fast_hasher: PasswordHasher) -> None:
    with pytest.raises(PasswordPolicyError):
        fast_hasher.hash_sync("x" * (MAX_PASSWORD_LENGTH + 1))


@pytest.mark.parametrize("password", ["abcdefgh\ud800", "\udfffabcdefgh", "abcd\udc80efgh"])
def test_lone_surrogate_rejected_without_echoing_password(
    fast_hasher: PasswordHasher, password: str
) -> None:
    with pytest.raises(PasswordPolicyError) as info:
        fast_hasher.hash_sync(password)
    assert password not in str(info.value)
    assert "abcd" not in str(info.value)
    assert "abcd" not in repr(info.value)


def test_policy_error_message_never_contains_password() -> None:
    password = "Zq9#" * 300  # too long
    with pytest.raises(PasswordPolicyError) as info:
        normalise_password(password)
    assert "Zq9#" not in str(info.value)


def test_policy_error_is_a_value_error_and_a_422_invalid_request() -> None:
    with pytest.raises(PasswordPolicyError) as info:
        normalise_password("short")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidRequest)
    assert info.value.status == 422
    assert PasswordPolicyError is errors.PasswordPolicyError is gatepass.PasswordPolicyError


# worker threads ------------------------------------------------------------


def record_thread(
    hasher: PasswordHasher, name: str, threads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    original: Callable[..., Any] = getattr(hasher, name)

    def wrapper(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args)

    monkeypatch.setattr(hasher, name, wrapper)


@pytest.mark.anyio
async def test_async_hash_runs_in_worker_thread(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    record_thread(fast_hasher, "hash_sync", threads, monkeypatch)
    encoded = await fast_hasher.hash(PASSWORD)
    assert parameters(encoded)[1] == FAST_HASHER_PARAMS["time_cost"]
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
async def test_async_verify_runs_in_worker_thread(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = fast_hasher.hash_sync(PASSWORD)
    threads: list[int] = []
    record_thread(fast_hasher, "verify_sync", threads, monkeypatch)
    assert (await fast_hasher.verify(encoded, PASSWORD)).ok
    assert not (await fast_hasher.verify(encoded, "wrong password")).ok
    assert len(threads) == 2
    assert threading.get_ident() not in threads


@pytest.mark.anyio
async def test_async_dummy_verify_runs_in_worker_thread_and_fails(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    record_thread(fast_hasher, "dummy_verify_sync", threads, monkeypatch)
    assert not (await fast_hasher.dummy_verify(PASSWORD)).ok
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
async def test_warm_up_computes_dummy_hash_in_worker_thread(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    record_thread(fast_hasher, "_spend_dummy_verify", threads, monkeypatch)
    await fast_hasher.warm_up()
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
async def test_argon2_itself_never_runs_on_event_loop_thread(
    fast_hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    for name in ("hash", "verify"):
        real = getattr(argon2.PasswordHasher, name)

        def spy(self: argon2.PasswordHasher, *args: Any, _real: Any = real) -> Any:
            threads.append(threading.get_ident())
            return _real(self, *args)

        monkeypatch.setattr(argon2.PasswordHasher, name, spy)
    encoded = await fast_hasher.hash(PASSWORD)
    await fast_hasher.verify(encoded, PASSWORD)
    await fast_hasher.dummy_verify(PASSWORD)
    await fast_hasher.warm_up()
    assert len(threads) >= 4
    assert threading.get_ident() not in threads
