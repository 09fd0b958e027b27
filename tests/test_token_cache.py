"""The verified-token cache: a repeat skips the signature, never the other checks."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from gatepass.core import Gatepass
from tests.conftest import ORIGIN, FakeClock, bearer_me_status, login, register, token_login


def _gatepass(client: TestClient) -> Gatepass:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    return gp


def _cached(client: TestClient, token: str) -> None:
    """Use the token until it is in the cache, and prove it is."""
    assert bearer_me_status(client, token) == 200
    tokens = _gatepass(client).access_tokens
    before = tokens.cached_tokens
    assert bearer_me_status(client, token) == 200
    assert tokens.cached_tokens == before  # a hit, not a new entry
    assert before >= 1


def test_cached_token_is_refused_after_bearer_logout(client: TestClient) -> None:
    register(client)
    pair = token_login(client, kind="api")
    _cached(client, pair["access_token"])
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert client.post("/auth/logout", headers=auth).status_code == 204
    assert bearer_me_status(client, pair["access_token"]) == 401


def test_cached_token_is_refused_after_its_family_is_deleted(client: TestClient) -> None:
    register(client)
    victim = token_login(client, kind="api")
    other = token_login(client, kind="api")
    _cached(client, victim["access_token"])
    sessions = client.get(
        "/auth/sessions", headers={"Authorization": f"Bearer {victim['access_token']}"}
    ).json()
    family = next(s["id"] for s in sessions if s["current"])
    deleted = client.delete(
        f"/auth/sessions/{family}", headers={"Authorization": f"Bearer {other['access_token']}"}
    )
    assert deleted.status_code == 204
    assert bearer_me_status(client, victim["access_token"]) == 401
    assert bearer_me_status(client, other["access_token"]) == 200


def test_cached_token_is_refused_after_logout_all_from_the_browser(client: TestClient) -> None:
    register(client)
    pair = token_login(client, kind="api")
    _cached(client, pair["access_token"])
    csrf = login(client)
    out = client.post("/auth/logout-all", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert out.status_code == 204
    assert bearer_me_status(client, pair["access_token"]) == 401


def test_cached_token_is_refused_once_expired(
    make_client: Callable[..., TestClient], clock: FakeClock
) -> None:
    client = make_client(access_token_ttl="60", leeway="0")
    register(client)
    pair = token_login(client, kind="api")
    _cached(client, pair["access_token"])
    clock.advance(59)
    assert bearer_me_status(client, pair["access_token"]) == 200
    clock.advance(2)
    assert bearer_me_status(client, pair["access_token"]) == 401


def test_cache_holds_at_most_its_bound(client: TestClient) -> None:
    register(client)
    tokens = _gatepass(client).access_tokens
    tokens.verifier._cache_size = (
        3  # a small bound for the test; the default is VERIFIED_CACHE_SIZE
    )
    issued = [token_login(client, kind="api")["access_token"] for _ in range(6)]
    for token in issued:
        assert bearer_me_status(client, token) == 200
    assert tokens.cached_tokens == 3
    # Evicted tokens are still good: they are verified again from scratch.
    assert bearer_me_status(client, issued[0]) == 200
    assert tokens.cached_tokens == 3


def test_tampered_copy_of_a_cached_token_is_refused(client: TestClient) -> None:
    register(client)
    token = token_login(client, kind="api")["access_token"]
    _cached(client, token)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert bearer_me_status(client, tampered) == 401
    assert bearer_me_status(client, token) == 200


def test_forged_tokens_with_fresh_header_spellings_do_not_enter_the_header_cache(
    client: TestClient,
) -> None:
    # Many spellings of a valid header (typ casing, key order) with junk signatures:
    # remembered, they would evict the real headers and cost a lock each.
    import base64
    import itertools
    import json

    register(client)
    token = token_login(client, kind="api")["access_token"]
    assert bearer_me_status(client, token) == 200
    verifier = _gatepass(client).access_tokens.verifier
    before = dict(verifier._headers)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    _, payload, signature = token.split(".")
    spellings = {
        "".join(c) for c in itertools.product(*[(ch.lower(), ch.upper()) for ch in "at+jwt"])
    }
    for typ in sorted(spellings):
        for order in (("alg", "kid", "typ"), ("typ", "kid", "alg")):
            fields = {**header, "typ": typ}
            raw = json.dumps({name: fields[name] for name in order}).encode()
            forged_header = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            forged = f"{forged_header}.{payload}.{signature[:-4]}AAAA"
            assert bearer_me_status(client, forged) == 401
    assert verifier._headers == before
