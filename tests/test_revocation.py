"""Revocation of access tokens and families, and the hybrid authenticator's session lists.

In process against the real app (``make_client``) with the injected clock; the last
tests call the pure :func:`gatepass.revocation.check_not_revoked` with hand-built state.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gatepass.revocation import check_not_revoked
from gatepass.stores.base import BearerState, UserRecord
from gatepass.tokens import AccessClaims, InvalidToken
from tests.conftest import (
    ORIGIN,
    PASSWORD,
    FakeClock,
    bearer,
    bearer_me_status,
    login,
    register,
    session_cookie,
    token_login,
)

MakeClient = Callable[..., TestClient]
NEW_PASSWORD = "a brand new passphrase"
EVE = "eve@example.com"


def refresh_status(client: TestClient, refresh_token: str) -> int:
    return client.post("/auth/refresh", json={"refresh_token": refresh_token}).status_code


def cookie_me_status(client: TestClient) -> int:
    """``/auth/me`` with whatever session cookie the jar holds, and no Authorization."""
    return client.get("/auth/me").status_code


def claims_of(access_token: str) -> dict[str, Any]:
    segment = access_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def sessions(client: TestClient, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = client.get("/auth/sessions", headers=headers or {})
    assert response.status_code == 200, response.text
    return list(response.json())


def family_id_of(client: TestClient, access_token: str) -> str:
    (row,) = [r for r in sessions(client, bearer(access_token)) if r["current"]]
    assert row["kind"] == "token"
    return str(row["id"])


def metrics_text(client: TestClient) -> str:
    return client.get("/metrics").text


def counter(text: str, name: str) -> float:
    """Sum of every sample of counter ``name`` (all label sets)."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


# Bearer logout --------------------------------------------------------------------------


def test_bearer_logout_revokes_that_access_token_and_its_refresh_family(
    client: TestClient,
) -> None:
    register(client)
    pair = token_login(client)
    assert bearer_me_status(client, pair["access_token"]) == 200
    response = client.post("/auth/logout", headers=bearer(pair["access_token"]))
    assert response.status_code == 204, response.text
    assert bearer_me_status(client, pair["access_token"]) == 401
    assert refresh_status(client, pair["refresh_token"]) == 401
    # A second logout with the same token is refused too: it is dead.
    assert client.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 401


def test_bearer_logout_needs_no_csrf_token_even_with_a_session_cookie_in_the_jar(
    client: TestClient,
) -> None:
    register(client)
    login(client)  # a web session cookie rides along, but the Authorization header decides
    pair = token_login(client)
    response = client.post("/auth/logout", headers=bearer(pair["access_token"]))
    assert response.status_code == 204, response.text
    assert "set-cookie" not in response.headers  # the web session is not touched
    assert bearer_me_status(client, pair["access_token"]) == 401


def test_bearer_logout_leaves_other_families_and_web_sessions_alive(client: TestClient) -> None:
    register(client)
    login(client)
    leaving = token_login(client)
    staying = token_login(client)
    assert client.post("/auth/logout", headers=bearer(leaving["access_token"])).status_code == 204
    assert cookie_me_status(client) == 200
    assert bearer_me_status(client, staying["access_token"]) == 200
    assert refresh_status(client, staying["refresh_token"]) == 200


def test_bearer_logout_revokes_the_jti_even_when_the_family_was_already_rotated(
    client: TestClient,
) -> None:
    register(client)
    pair = token_login(client)
    rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    # Log out with the *older* access token of the family: the newest pair dies as well.
    assert client.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    assert bearer_me_status(client, pair["access_token"]) == 401
    assert bearer_me_status(client, rotated["access_token"]) == 401
    assert refresh_status(client, rotated["refresh_token"]) == 401


# logout-all -----------------------------------------------------------------------------


def test_logout_all_revokes_every_access_token_issued_before_now(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    older = token_login(client)
    clock.advance(120)
    rotated = client.post("/auth/refresh", json={"refresh_token": older["refresh_token"]}).json()
    caller = token_login(client)
    csrf = login(client)
    clock.advance(5)
    response = client.post("/auth/logout-all", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert response.status_code == 204, response.text
    for token in (older["access_token"], rotated["access_token"], caller["access_token"]):
        assert bearer_me_status(client, token) == 401
    assert refresh_status(client, rotated["refresh_token"]) == 401
    assert refresh_status(client, caller["refresh_token"]) == 401
    assert cookie_me_status(client) == 401


def test_logout_all_has_no_same_second_loophole(client: TestClient, clock: FakeClock) -> None:
    register(client)
    clock.advance(0.25)  # all of this happens inside one whole second
    first = token_login(client)
    clock.advance(0.25)
    caller = token_login(client)
    clock.advance(0.25)
    # Bearer caller: no CSRF token needed.
    assert client.post("/auth/logout-all", headers=bearer(caller["access_token"])).status_code == (
        204
    )
    assert claims_of(first["access_token"])["iat"] == int(clock.now)
    assert bearer_me_status(client, first["access_token"]) == 401
    assert bearer_me_status(client, caller["access_token"]) == 401
    assert refresh_status(client, first["refresh_token"]) == 401

    clock.advance(0.1)  # still the same second: a login right after logout-all works
    after = token_login(client)
    assert claims_of(after["access_token"])["iat"] == claims_of(first["access_token"])["iat"]
    assert bearer_me_status(client, after["access_token"]) == 200
    response = client.post("/auth/refresh", json={"refresh_token": after["refresh_token"]})
    assert response.status_code == 200, response.text
    assert bearer_me_status(client, response.json()["access_token"]) == 200


def test_logout_all_in_the_same_second_as_login_also_kills_a_token_from_an_exact_second(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    assert clock.now == int(clock.now)  # logout-all lands exactly on a whole second
    pair = token_login(client)
    assert client.post("/auth/logout-all", headers=bearer(pair["access_token"])).status_code == 204
    assert bearer_me_status(client, pair["access_token"]) == 401
    fresh = token_login(client)
    assert bearer_me_status(client, fresh["access_token"]) == 200


def test_logout_all_from_a_cookie_session_needs_the_csrf_token(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    login(client)
    response = client.post("/auth/logout-all", headers={"Origin": ORIGIN})
    assert response.status_code == 403
    assert bearer_me_status(client, pair["access_token"]) == 200


def test_logout_all_does_not_touch_another_users_tokens(client: TestClient) -> None:
    register(client)
    register(client, EVE)
    ada = token_login(client)
    eve = token_login(client, EVE)
    assert client.post("/auth/logout-all", headers=bearer(ada["access_token"])).status_code == 204
    assert bearer_me_status(client, eve["access_token"]) == 200
    assert refresh_status(client, eve["refresh_token"]) == 200


# password change ------------------------------------------------------------------------


def test_password_change_by_a_bearer_caller_kills_every_earlier_token_and_family(
    client: TestClient,
) -> None:
    register(client)
    login(client)
    other = token_login(client)
    caller = token_login(client)
    response = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(caller["access_token"]),
    )
    assert response.status_code == 204, response.text
    for pair in (other, caller):
        assert bearer_me_status(client, pair["access_token"]) == 401
        assert refresh_status(client, pair["refresh_token"]) == 401
    assert cookie_me_status(client) == 401  # web sessions end too
    fresh = token_login(client, password=NEW_PASSWORD)
    assert bearer_me_status(client, fresh["access_token"]) == 200


def test_password_change_by_a_cookie_caller_kills_every_earlier_token_and_family(
    client: TestClient,
) -> None:
    register(client)
    pair = token_login(client)
    csrf = login(client)
    old_cookie = session_cookie(client)
    response = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
    )
    assert response.status_code == 204, response.text
    assert bearer_me_status(client, pair["access_token"]) == 401
    assert refresh_status(client, pair["refresh_token"]) == 401
    # The caller keeps a session, under a new ID.
    assert session_cookie(client) not in (None, old_cookie)
    assert cookie_me_status(client) == 200
    fresh = token_login(client, password=NEW_PASSWORD)
    assert bearer_me_status(client, fresh["access_token"]) == 200


def test_a_failed_password_change_revokes_nothing(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    response = client.post(
        "/auth/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 401
    assert bearer_me_status(client, pair["access_token"]) == 200
    assert refresh_status(client, pair["refresh_token"]) == 200


# the sessions list ----------------------------------------------------------------------


def _assert_listing_has_no_secret(listing: list[dict[str, Any]], secrets: list[str]) -> None:
    text = json.dumps(listing)
    for secret in secrets:
        assert secret not in text
    for row in listing:
        assert row["id"] not in secrets
        assert set(row) == {
            "id",
            "kind",
            "created_at",
            "last_seen_at",
            "ip",
            "user_agent",
            "current",
        }


def test_sessions_lists_web_sessions_and_token_families_with_one_current_for_bearer(
    client: TestClient,
) -> None:
    register(client)
    login(client)
    cookie = session_cookie(client)
    assert cookie is not None
    other = token_login(client)
    caller = token_login(client)
    listing = sessions(client, bearer(caller["access_token"]))
    assert sorted(r["kind"] for r in listing) == ["token", "token", "web"]
    current = [r for r in listing if r["current"]]
    assert len(current) == 1
    assert current[0]["kind"] == "token"
    assert current[0]["id"] == family_id_of(client, caller["access_token"])
    assert current[0]["id"] != family_id_of(client, other["access_token"])
    _assert_listing_has_no_secret(
        listing,
        [
            cookie,
            cookie.rsplit(".", 1)[0],
            caller["access_token"],
            caller["refresh_token"],
            other["access_token"],
            other["refresh_token"],
        ],
    )


def test_sessions_lists_token_families_with_one_current_web_session_for_a_cookie_caller(
    client: TestClient,
) -> None:
    register(client)
    pair = token_login(client)
    login(client)
    cookie = session_cookie(client)
    assert cookie is not None
    listing = sessions(client)  # cookie only
    assert sorted(r["kind"] for r in listing) == ["token", "web"]
    current = [r for r in listing if r["current"]]
    assert len(current) == 1
    assert current[0]["kind"] == "web"
    (family,) = [r for r in listing if r["kind"] == "token"]
    assert family["current"] is False
    _assert_listing_has_no_secret(
        listing,
        [cookie, cookie.rsplit(".", 1)[0], pair["access_token"], pair["refresh_token"]],
    )


def test_the_family_id_in_the_listing_is_stable_across_rotations(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    before = family_id_of(client, pair["access_token"])
    rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    assert family_id_of(client, rotated["access_token"]) == before
    assert claims_of(rotated["access_token"])["sid"] == before


def test_sessions_does_not_list_revoked_families(client: TestClient) -> None:
    register(client)
    gone = token_login(client)
    gone_id = family_id_of(client, gone["access_token"])
    caller = token_login(client)
    assert client.post("/auth/logout", headers=bearer(gone["access_token"])).status_code == 204
    ids = [r["id"] for r in sessions(client, bearer(caller["access_token"]))]
    assert gone_id not in ids
    assert len(ids) == 1


# deleting one family --------------------------------------------------------------------


def test_deleting_a_family_ends_it_and_its_access_tokens(client: TestClient) -> None:
    register(client)
    target = token_login(client)
    rotated = client.post("/auth/refresh", json={"refresh_token": target["refresh_token"]}).json()
    caller = token_login(client)
    family_id = family_id_of(client, target["access_token"])
    response = client.delete(f"/auth/sessions/{family_id}", headers=bearer(caller["access_token"]))
    assert response.status_code == 204, response.text
    assert bearer_me_status(client, target["access_token"]) == 401
    assert bearer_me_status(client, rotated["access_token"]) == 401
    assert refresh_status(client, rotated["refresh_token"]) == 401
    assert bearer_me_status(client, caller["access_token"]) == 200
    # Deleting it again: it is no longer one of the caller's handles.
    again = client.delete(f"/auth/sessions/{family_id}", headers=bearer(caller["access_token"]))
    assert again.status_code == 404


def test_deleting_a_family_from_a_cookie_session_needs_the_csrf_token(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    family_id = family_id_of(client, pair["access_token"])
    csrf = login(client)
    refused = client.delete(f"/auth/sessions/{family_id}", headers={"Origin": ORIGIN})
    assert refused.status_code == 403
    assert bearer_me_status(client, pair["access_token"]) == 200
    response = client.delete(
        f"/auth/sessions/{family_id}", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN}
    )
    assert response.status_code == 204, response.text
    assert bearer_me_status(client, pair["access_token"]) == 401
    assert cookie_me_status(client) == 200  # the caller's own web session lives on


def test_deleting_another_users_family_is_404_and_leaves_it_alive(client: TestClient) -> None:
    register(client)
    register(client, EVE)
    ada = token_login(client)
    eve = token_login(client, EVE)
    ada_family = family_id_of(client, ada["access_token"])
    response = client.delete(f"/auth/sessions/{ada_family}", headers=bearer(eve["access_token"]))
    assert response.status_code == 404
    assert bearer_me_status(client, ada["access_token"]) == 200
    assert refresh_status(client, ada["refresh_token"]) == 200


@pytest.mark.parametrize(
    "handle", ["nope", "A" * 22, "%00", "..%2F..%2Fetc", "' OR '1'='1", "x" * 300]
)
def test_deleting_an_unknown_or_malformed_handle_is_404(client: TestClient, handle: str) -> None:
    register(client)
    pair = token_login(client)
    response = client.delete(f"/auth/sessions/{handle}", headers=bearer(pair["access_token"]))
    assert response.status_code == 404
    assert bearer_me_status(client, pair["access_token"]) == 200


def test_a_refresh_token_is_not_a_handle_for_deleting_its_family(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    caller = token_login(client)
    response = client.delete(
        f"/auth/sessions/{pair['refresh_token']}", headers=bearer(caller["access_token"])
    )
    assert response.status_code == 404
    assert refresh_status(client, pair["refresh_token"]) == 200


# the account page -----------------------------------------------------------------------


def test_the_account_page_lists_token_families_too(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    family_id = family_id_of(client, pair["access_token"])
    login(client)
    page = client.get("/account")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert re.search(rf'data-session="{re.escape(family_id)}" data-kind="token"', page.text)
    assert 'data-kind="web"' in page.text
    assert pair["refresh_token"] not in page.text
    assert pair["access_token"] not in page.text


# metrics --------------------------------------------------------------------------------


def test_metrics_counters_for_issue_refresh_reuse_and_revocation_move(client: TestClient) -> None:
    names = {
        "issued": "gatepass_access_tokens_issued_total",
        "refreshes": "gatepass_refreshes_total",
        "reuse": "gatepass_refresh_reuse_detections_total",
        "revocations": "gatepass_token_revocations_total",
    }
    register(client)
    text = metrics_text(client)
    start = {key: counter(text, name) for key, name in names.items()}

    first = token_login(client)
    text = metrics_text(client)
    assert counter(text, names["issued"]) == start["issued"] + 1

    second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    text = metrics_text(client)
    assert counter(text, names["issued"]) == start["issued"] + 2
    assert counter(text, names["refreshes"]) == start["refreshes"] + 1

    assert refresh_status(client, first["refresh_token"]) == 401  # reuse
    text = metrics_text(client)
    assert counter(text, names["reuse"]) == start["reuse"] + 1
    assert counter(text, names["refreshes"]) == start["refreshes"] + 1
    after_reuse = counter(text, names["revocations"])
    assert after_reuse > start["revocations"]
    assert 'reason="reuse"' in text

    third = token_login(client)
    assert client.post("/auth/logout", headers=bearer(third["access_token"])).status_code == 204
    text = metrics_text(client)
    assert counter(text, names["revocations"]) > after_reuse
    assert second["access_token"]  # used above only for the count


# cost of the revocation check -----------------------------------------------------------


def test_revocation_check_stays_correct_with_thousands_of_revoked_jtis(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    revoked = token_login(client)
    fresh_before = token_login(client)
    revoked_jti = claims_of(revoked["access_token"])["jti"]
    store = client.app.state.gatepass.store  # type: ignore[attr-defined]
    expires_at = clock.now + 3600

    async def revoke_many() -> None:
        for i in range(2000):
            await store.revoke_jti(f"bulk-{i:05d}", expires_at, clock.now)
            if i == 1000:
                await store.revoke_jti(revoked_jti, expires_at, clock.now)

    client.portal.call(revoke_many)  # type: ignore[union-attr]
    # Written straight to the store, as another process would: give every process
    # time to pick the revocations up (a second or two at most, by design).
    clock.advance(5)
    fresh_after = token_login(client)
    assert bearer_me_status(client, revoked["access_token"]) == 401
    assert bearer_me_status(client, fresh_before["access_token"]) == 200
    assert bearer_me_status(client, fresh_after["access_token"]) == 200


def test_a_denylisted_jti_stays_denied_until_its_token_expires(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    pair = token_login(client)
    assert client.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    clock.advance(pair["expires_in"] - 30)  # still inside the token's lifetime
    assert bearer_me_status(client, pair["access_token"]) == 401


# the pure check -------------------------------------------------------------------------

NOW = 1_800_000_000


def _user(tokens_valid_after: float = 0.0) -> UserRecord:
    return UserRecord(
        id="u-1",
        email="ada@example.com",
        password_hash="$argon2id$unused",
        roles=("user",),
        created_at=NOW - 86_400,
        tokens_valid_after=tokens_valid_after,
    )


def _claims(iat: float = NOW) -> AccessClaims:
    return AccessClaims(sub="u-1", jti="j-1", sid="f-1", roles=("user",), iat=iat, exp=iat + 900)


def test_check_not_revoked_accepts_a_live_token() -> None:
    state = BearerState(user=_user(), family_live=True, jti_revoked=False)
    check_not_revoked(_claims(), state)  # no exception


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (BearerState(user=None, family_live=True, jti_revoked=False), "user"),
        (BearerState(user=_user(), family_live=True, jti_revoked=True), "revoked"),
        (BearerState(user=_user(), family_live=False, jti_revoked=False), "family"),
        (BearerState(user=_user(NOW + 1.0), family_live=True, jti_revoked=False), "epoch"),
    ],
    ids=["user-gone", "jti-denied", "family-revoked", "before-epoch"],
)
def test_check_not_revoked_refuses_each_kind_of_dead_token(state: BearerState, reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        check_not_revoked(_claims(), state)
    assert reason in caught.value.reason
    assert caught.value.token_sent is True


def test_check_not_revoked_compares_the_epoch_in_whole_seconds() -> None:
    # logout-all at NOW + 0.6; a token issued later in that same second has iat == NOW.
    same_second = BearerState(user=_user(NOW + 0.6), family_live=True, jti_revoked=False)
    check_not_revoked(_claims(iat=NOW), same_second)
    with pytest.raises(InvalidToken):
        check_not_revoked(_claims(iat=NOW - 1), same_second)


def test_check_not_revoked_refuses_a_same_second_token_through_its_revoked_family() -> None:
    # The same-second token issued *before* logout-all passes the epoch test; its
    # family, revoked by logout-all, is what kills it.
    state = BearerState(user=_user(NOW + 0.6), family_live=False, jti_revoked=False)
    with pytest.raises(InvalidToken):
        check_not_revoked(_claims(iat=NOW), state)


# revocations reach other processes (on SQLite and on PostgreSQL) ------------------------


def test_a_bearer_logout_in_one_process_reaches_another_within_the_poll_interval(
    make_client: MakeClient, clock: FakeClock, database_url: str
) -> None:
    from gatepass.revocation import REVOCATION_POLL_SECONDS

    node_a = make_client(database_url=database_url)
    node_b = make_client(database_url=database_url)  # a second server process on the same database
    register(node_a)
    pair = token_login(node_a)
    assert bearer_me_status(node_b, pair["access_token"]) == 200
    assert node_a.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    assert bearer_me_status(node_a, pair["access_token"]) == 401  # at once where it happened
    clock.advance(REVOCATION_POLL_SECONDS)
    assert bearer_me_status(node_b, pair["access_token"]) == 401
    assert refresh_status(node_b, pair["refresh_token"]) == 401


def test_logout_all_in_one_process_reaches_another_within_the_poll_interval(
    make_client: MakeClient, clock: FakeClock, database_url: str
) -> None:
    from gatepass.revocation import REVOCATION_POLL_SECONDS

    node_a = make_client(database_url=database_url)
    node_b = make_client(database_url=database_url)
    register(node_a)
    first = token_login(node_a)
    second = token_login(node_b)
    for token in (first["access_token"], second["access_token"]):
        assert bearer_me_status(node_b, token) == 200
    assert node_a.post("/auth/logout-all", headers=bearer(first["access_token"])).status_code == 204
    clock.advance(REVOCATION_POLL_SECONDS)
    for token in (first["access_token"], second["access_token"]):
        assert bearer_me_status(node_b, token) == 401
    fresh = token_login(node_b)
    assert bearer_me_status(node_a, fresh["access_token"]) == 200


def test_a_restarted_process_still_refuses_tokens_revoked_before_it_started(
    make_client: MakeClient, database_url: str
) -> None:
    before = make_client(database_url=database_url)
    register(before)
    pair = token_login(before)
    assert before.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    after = make_client(database_url=database_url)  # starts after the revocation, same database
    assert bearer_me_status(after, pair["access_token"]) == 401
