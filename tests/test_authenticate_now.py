"""``Authenticator.authenticate_now``: the sync adapters' verdict on a Bearer request
from memory alone. It must never accept what the async path would refuse; when in
doubt it answers ``None`` and the caller asks the stores."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gatepass.core import Gatepass
from gatepass.errors import AuthenticationFailed, InvalidToken
from gatepass.keys import KEY_RELOAD_SECONDS
from gatepass.revocation import REVOCATION_POLL_SECONDS
from tests.conftest import FakeClock, bearer, bearer_me_status, register, token_login


def _gatepass(client: TestClient) -> Gatepass:
    gp = client.app.state.gatepass  # type: ignore[attr-defined]
    assert isinstance(gp, Gatepass)
    return gp


def _warm_token(client: TestClient) -> str:
    """A token the server has just accepted, so its key, user and view are in memory."""
    register(client)
    token = str(token_login(client, kind="api")["access_token"])
    assert bearer_me_status(client, token) == 200
    return token


def test_a_token_the_server_just_accepted_is_accepted_from_memory(client: TestClient) -> None:
    token = _warm_token(client)
    identity = _gatepass(client).authenticator.authenticate_now(f"Bearer {token}")
    assert identity is not None
    assert identity.method == "bearer"
    assert identity.user.email == "ada@example.com"
    assert identity.roles == ("user",)


def test_no_authorization_header_is_left_to_the_session_path(client: TestClient) -> None:
    assert _gatepass(client).authenticator.authenticate_now(None) is None


def test_forged_and_foreign_scheme_credentials_are_refused_at_once(client: TestClient) -> None:
    token = _warm_token(client)
    authenticator = _gatepass(client).authenticator
    head, payload, signature = token.split(".")
    other = "B" if signature[5] == "A" else "A"  # surely a different signature
    forged = f"{head}.{payload}.{signature[:5]}{other}{signature[6:]}"
    with pytest.raises(InvalidToken):
        authenticator.authenticate_now(f"Bearer {forged}")
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate_now(f"Basic {token}")


def test_a_token_revoked_by_logout_is_refused_from_memory(client: TestClient) -> None:
    token = _warm_token(client)
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    with pytest.raises(InvalidToken):
        _gatepass(client).authenticator.authenticate_now(f"Bearer {token}")


def test_a_revocation_view_due_for_a_read_defers_to_the_stores(
    client: TestClient, clock: FakeClock
) -> None:
    # Another process may have revoked the token since the last read: only a read
    # of the feed can tell, so memory alone must not accept it.
    token = _warm_token(client)
    clock.advance(REVOCATION_POLL_SECONDS + 0.1)
    assert _gatepass(client).authenticator.authenticate_now(f"Bearer {token}") is None
    assert bearer_me_status(client, token) == 200  # the async path reads, then accepts


def test_a_key_ring_due_for_a_reload_defers_to_the_stores(
    client: TestClient, clock: FakeClock
) -> None:
    token = _warm_token(client)
    clock.advance(KEY_RELOAD_SECONDS + 1)
    assert _gatepass(client).authenticator.authenticate_now(f"Bearer {token}") is None


def test_a_user_no_longer_cached_defers_to_the_stores(client: TestClient) -> None:
    # Roles and existence come from the user record: a stale copy must not decide.
    token = _warm_token(client)
    _gatepass(client).bearer.drop_user()
    assert _gatepass(client).authenticator.authenticate_now(f"Bearer {token}") is None
