"""Device names for the account page, from user agents that may be hostile."""

from __future__ import annotations

import pytest

from gatepass.device_names import (
    CACHE_SIZE,
    MAX_NAME_LENGTH,
    MAX_USER_AGENT_LENGTH,
    UNKNOWN_DEVICE,
    _cached_name,
    device_name,
)

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.71 Mobile Safari/537.36"
)
EDGE_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"
)


@pytest.mark.parametrize(
    ("agent", "name"),
    [
        (CHROME_LINUX, "Chrome 156 on Linux"),
        (FIREFOX_WINDOWS, "Firefox 128 on Windows"),
        (SAFARI_IPHONE, "Safari on iOS"),
        (SAFARI_MAC, "Safari on macOS"),
        (CHROME_ANDROID, "Chrome 126 on Android"),
        (EDGE_WINDOWS, "Edge 126 on Windows"),
        ("curl/8.5.0", "curl 8"),
    ],
)
def test_common_agents_are_named_as_people_know_them(agent: str, name: str) -> None:
    assert device_name(agent) == name


@pytest.mark.parametrize("agent", [None, "", "testclient", "python-httpx/0.28.1", "Other"])
def test_missing_or_unrecognised_agents_are_an_unknown_device(agent: str | None) -> None:
    assert device_name(agent) == UNKNOWN_DEVICE


def test_agent_padded_past_the_parsed_prefix_is_not_parsed_in_full() -> None:
    # Only the prefix is parsed (regular expressions over a huge string cost time on
    # every page view): a browser named after the prefix is not recognised.
    padded = "x" * MAX_USER_AGENT_LENGTH + " " + FIREFOX_WINDOWS
    assert device_name(padded) == UNKNOWN_DEVICE
    assert device_name(FIREFOX_WINDOWS + "x" * 1_000_000) == "Firefox 128 on Windows"


def test_many_distinct_hostile_agents_cannot_grow_the_cache_without_bound() -> None:
    _cached_name.cache_clear()
    for n in range(CACHE_SIZE + 50):
        device_name(f"{FIREFOX_WINDOWS} junk/{n}")
    assert _cached_name.cache_info().currsize == CACHE_SIZE


def test_cache_keys_are_the_bounded_prefix_not_the_huge_agent() -> None:
    _cached_name.cache_clear()
    device_name(CHROME_LINUX + "y" * 100_000)
    device_name(CHROME_LINUX + "y" * 200_000)
    info = _cached_name.cache_info()
    assert (info.currsize, info.hits) == (1, 1)


@pytest.mark.parametrize(
    "agent",
    [
        "\x00",
        "\x00" * 10_000,
        CHROME_LINUX.replace("Linux", "Li\x00nux"),
        FIREFOX_WINDOWS + "\x00\x01\x1b[31m",
        "\u202eEvilSpider/1.0",
        "<script>alert(1)</script>/1.0",
        "\udcff\ud800 broken surrogates",
        "".join(chr(c) for c in range(0, 0x3000, 7)),
        "a" * 100_000,
        ")" * 5_000 + "(" * 5_000,
    ],
)
def test_hostile_agents_never_raise_and_give_a_short_printable_name(agent: str) -> None:
    name = device_name(agent)
    assert name
    assert name.isprintable()
    assert len(name) <= MAX_NAME_LENGTH


def test_non_ascii_digits_are_not_shown_as_a_version() -> None:
    spoofed = CHROME_LINUX.replace("Chrome/156", "Chrome/\u0661\u0665\u0666")
    assert device_name(spoofed) == "Chrome on Linux"
