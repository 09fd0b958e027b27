"""The verified-token cache: a repeat skips the signature, never the other checks."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from gatepass.core import Gatepass
from tests.conftest import ORIGIN, PASSWORD, FakeClock, login, register


def _gatepass(client: TestClient) -> Gatepass:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    return gp


def _token_login(client: TestClient, email: str = "ada@example.com") -> dict[str, str]:
    response = client.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "client": "api"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _me(client: TestClient, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _cached(client: TestClient, token: str) -> None:
    """Use the token until it is in the cache, and prove it is."""
    assert _me(client, token) == 200
    tokens = _gatepass(client).access_tokens
    before = tokens.cached_tokens
    assert _me(client, token) == 200
    assert tokens.cached_tokens == before  # a hit, not a new entry
    assert before >= 1


def test_cached_token_is_refused_after_bearer_logout(client: TestClient) -> None:
    register(client)
    pair = _token_login(client)
    _cached(client, pair["access_token"])
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert client.post("/auth/logout", headers=auth).status_code == 204
    assert _me(client, pair["access_token"]) == 401


def test_cached_token_is_refused_after_its_family_is_deleted(client: TestClient) -> None:
    register(client)
    victim = _token_login(client)
    other = _token_login(client)
    _cached(client, victim["access_token"])
    sessions = client.get(
        "/auth/sessions", headers={"Authorization": f"Bearer {victim['access_token']}"}
    ).json()
    family = next(s["id"] for s in sessions if s["current"])
    deleted = client.delete(
        f"/auth/sessions/{family}", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert deleted.status_code == 204
    assert _me(client, victim["access_token"]) == 401
    assert _me(client, other["access_token"]) == 200


def test_cached_token_is_refused_after_logout_all_from_the_browser(client: TestClient) -> None:
    register(client)
    pair = _token_login(client)
    _cached(client, pair["access_token"])
    csrf = login(client)
    out = client.post("/auth/logout-all", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert out.status_code == 204
    assert _me(client, pair["access_token"]) == 401


def test_cached_token_is_refused_once_expired(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(access_token_ttl="60", leeway="0")
    register(client)
    pair = _token_login(client)
    _cached(client, pair["access_token"])
    clock.advance(59)
    assert _me(client, pair["access_token"]) == 200
    clock.advance(2)
    assert _me(client, pair["access_token"]) == 401


def test_cache_holds_at_most_its_bound(client: TestClient) -> None:
    register(client)
    tokens = _gatepass(client).access_tokens
    tokens._cache_size = 3  # a small bound for the test; the default is VERIFIED_CACHE_SIZE
    issued = [_token_login(client)["access_token"] for _ in range(6)]
    for token in issued:
        assert _me(client, token) == 200
    assert tokens.cached_tokens == 3
    # Evicted tokens are still good: they are verified again from scratch.
    assert _me(client, issued[0]) == 200
    assert tokens.cached_tokens == 3


def test_tampered_copy_of_a_cached_token_is_refused(client: TestClient) -> None:
    register(client)
    token = _token_login(client)["access_token"]
    _cached(client, token)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert _me(client, tampered) == 401
    assert _me(client, token) == 200
