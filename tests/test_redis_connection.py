"""Connecting to real Redis servers from GATEPASS_REDIS_URL, and refusing bad URLs."""

from __future__ import annotations

import pytest

from gatepass.errors import ConfigError, StoreUnavailable
from gatepass.stores.redis_connection import check_redis_url, connect, redis_errors_mapped
from tests.servers import free_port

pytestmark = pytest.mark.anyio


async def test_both_kinds_of_url_reach_a_real_server(any_redis_url: str) -> None:
    client = connect(any_redis_url)
    try:
        with redis_errors_mapped():
            await client.set(b"{t}probe", b"1")
            assert await client.get(b"{t}probe") == b"1"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis+cluster://", "redis+cluster://a:b,c:1", "redis://"],
)
def test_a_url_we_cannot_read_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="GATEPASS_REDIS_URL"):
        check_redis_url(url)


async def test_an_unreachable_server_is_store_unavailable_without_the_password() -> None:
    client = connect(f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable) as caught, redis_errors_mapped():
            await client.get(b"k")
    finally:
        await client.aclose()
    assert "hunter2" not in str(caught.value)
