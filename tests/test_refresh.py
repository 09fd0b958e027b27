"""Refresh-token families over HTTP, in process: rotation, reuse detection, the
absolute lifetime, strict request handling, revocation paths, and storage of hashes only.

Every test drives the real app (``make_client``) with the injected clock; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gatepass.config import Settings
from gatepass.core import Gatepass
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
REUSE_METRIC = "gatepass_refresh_reuse_detections_total"


def refresh(client: TestClient, refresh_token: object) -> Any:
    return client.post("/auth/refresh", json={"refresh_token": refresh_token})


def metric(client: TestClient, name: str) -> float:
    """The value of one unlabelled sample of ``/metrics`` (0 when absent)."""
    text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def jwt_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def current_family_id(client: TestClient, access_token: str) -> str:
    response = client.get("/auth/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    (row,) = [r for r in response.json() if r["current"]]
    assert row["kind"] == "token"
    return str(row["id"])


# rotation and reuse --------------------------------------------------------------------


def test_rotation_returns_a_new_pair_and_the_old_refresh_token_dies(client: TestClient) -> None:
    register(client)
    first = token_login(client)
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "Bearer"
    assert second["expires_in"] > 0
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert bearer_me_status(client, second["access_token"]) == 200
    # The old token cannot be rotated again; the new one can.
    assert refresh(client, first["refresh_token"]).status_code == 401


def test_each_rotated_token_is_good_for_exactly_one_rotation_along_a_chain(
    client: TestClient,
) -> None:
    register(client)
    token = token_login(client)["refresh_token"]
    seen = {token}
    for _ in range(5):
        response = refresh(client, token)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
        assert token not in seen
        seen.add(token)


def test_reusing_a_rotated_token_is_401_and_kills_the_newest_refresh_and_access_tokens(
    client: TestClient,
) -> None:
    register(client)
    first = token_login(client)
    second = refresh(client, first["refresh_token"]).json()
    third = refresh(client, second["refresh_token"]).json()
    assert bearer_me_status(client, third["access_token"]) == 200

    reuse = refresh(client, first["refresh_token"])  # the thief's (or victim's) replay
    assert reuse.status_code == 401
    assert reuse.headers["content-type"].startswith("application/problem+json")

    assert refresh(client, third["refresh_token"]).status_code == 401
    assert bearer_me_status(client, third["access_token"]) == 401
    assert bearer_me_status(client, second["access_token"]) == 401
    assert bearer_me_status(client, first["access_token"]) == 401


def test_reuse_in_one_family_leaves_the_users_other_families_alive(client: TestClient) -> None:
    register(client)
    victim = token_login(client)
    other = token_login(client)
    refresh(client, victim["refresh_token"])
    assert refresh(client, victim["refresh_token"]).status_code == 401
    assert bearer_me_status(client, other["access_token"]) == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_reuse_detection_increments_the_metric_and_audits_a_warning_without_tokens(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    register(client)
    first = token_login(client)
    second = refresh(client, first["refresh_token"]).json()
    before = metric(client, REUSE_METRIC)

    with caplog.at_level(logging.INFO, logger="gatepass.audit"):
        assert refresh(client, first["refresh_token"]).status_code == 401

    assert metric(client, REUSE_METRIC) == before + 1
    audit = [r for r in caplog.records if r.name == "gatepass.audit"]
    assert [r.levelno for r in audit] == [logging.WARNING]
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert "reuse" in audit[0].getMessage().lower()
    for secret in (
        first["refresh_token"],
        second["refresh_token"],
        first["access_token"],
        second["access_token"],
        hashlib.sha256(first["refresh_token"].encode()).hexdigest(),
    ):
        assert secret not in logged


def test_presenting_a_rotated_token_of_an_already_revoked_family_counts_no_new_detection(
    client: TestClient,
) -> None:
    register(client)
    first = token_login(client)
    refresh(client, first["refresh_token"])
    assert refresh(client, first["refresh_token"]).status_code == 401
    after_first_detection = metric(client, REUSE_METRIC)
    assert refresh(client, first["refresh_token"]).status_code == 401
    assert metric(client, REUSE_METRIC) == after_first_detection


# absolute lifetime ---------------------------------------------------------------------


def test_refresh_lifetime_is_counted_from_login_not_from_the_last_rotation(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(refresh_token_ttl="100")
    register(client)
    pair = token_login(client)  # t
    clock.advance(60)  # t + 60: inside the family's lifetime
    response = refresh(client, pair["refresh_token"])
    assert response.status_code == 200, response.text
    newest = response.json()["refresh_token"]
    clock.advance(41)  # t + 101: the newest token is only 41 s old, the family 101 s
    assert refresh(client, newest).status_code == 401


def test_a_family_still_rotates_just_before_its_absolute_lifetime_ends(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(refresh_token_ttl="100")
    register(client)
    token = token_login(client)["refresh_token"]
    clock.advance(99)
    assert refresh(client, token).status_code == 200


# request validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"refresh_token": 12345},
        {"refresh_token": 1.5},
        {"refresh_token": True},
        {"refresh_token": None},
        {"refresh_token": ["abc"]},
        {"refresh_token": {"token": "abc"}},
        {"refresh": "abc"},
    ],
    ids=["missing", "int", "float", "bool", "null", "list", "object", "misnamed"],
)
def test_refresh_is_422_only_when_the_token_is_missing_or_not_a_string(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.post("/auth/refresh", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "presented",
    [
        "",
        " ",
        "x" * 50_000,
        "jeton-de-rafraîchissement-🔑",
        "\u202e" + "A" * 43,
        "A" * 43,
    ],
    ids=["empty", "space", "huge-50KB", "unicode", "bidi", "well-formed-but-unknown"],
)
def test_refresh_is_401_for_any_string_that_is_not_a_live_token(
    client: TestClient, presented: str
) -> None:
    response = refresh(client, presented)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert presented.strip() == "" or presented not in response.text


def test_refresh_is_401_for_an_access_token_or_a_session_cookie_value(
    client: TestClient,
) -> None:
    register(client)
    login(client)
    cookie = session_cookie(client)
    assert cookie is not None
    client.cookies.clear()
    pair = token_login(client)
    for credential in (pair["access_token"], cookie, cookie.rsplit(".", 1)[0]):
        assert refresh(client, credential).status_code == 401
    # None of those attempts touched the real refresh token.
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_a_valid_token_with_surrounding_whitespace_is_401_and_not_consumed(
    client: TestClient,
) -> None:
    register(client)
    token = token_login(client)["refresh_token"]
    assert refresh(client, f" {token} ").status_code == 401
    assert refresh(client, f"{token}\n").status_code == 401
    assert refresh(client, token).status_code == 200


def test_malformed_refresh_requests_never_consume_a_valid_token(client: TestClient) -> None:
    register(client)
    token = token_login(client)["refresh_token"]
    attempts: list[tuple[bytes, str, int]] = [
        # invalid JSON that still contains the token
        (f'{{"refresh_token": "{token}"'.encode(), "application/json", 400),
        (f'{{"refresh_token": "{token}",}}'.encode(), "application/json", 400),
        # right value, wrong type
        (json.dumps({"refresh_token": [token]}).encode(), "application/json", 422),
        (json.dumps({"refresh_token": {"t": token}}).encode(), "application/json", 422),
        # a JSON array instead of an object
        (json.dumps([token]).encode(), "application/json", 422),
        # valid JSON, wrong content type
        (json.dumps({"refresh_token": token}).encode(), "text/plain", 415),
        # oversized body carrying the token
        (
            json.dumps({"refresh_token": token, "pad": "x" * (70 * 1024)}).encode(),
            "application/json",
            413,
        ),
    ]
    for body, content_type, expected in attempts:
        response = client.post(
            "/auth/refresh", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == expected, (content_type, body[:60], response.text)
    response = refresh(client, token)
    assert response.status_code == 200, response.text
    # and it was a clean rotation, not a detected reuse
    assert bearer_me_status(client, response.json()["access_token"]) == 200


# revocation paths ----------------------------------------------------------------------


def test_refresh_after_bearer_logout_is_401(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    assert client.post("/auth/logout", headers=bearer(pair["access_token"])).status_code == 204
    assert refresh(client, pair["refresh_token"]).status_code == 401


def test_refresh_after_logout_all_from_a_web_session_is_401(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    csrf = login(client)  # web session in the jar
    response = client.post("/auth/logout-all", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert response.status_code == 204, response.text
    assert refresh(client, pair["refresh_token"]).status_code == 401
    assert bearer_me_status(client, pair["access_token"]) == 401


def test_refresh_after_password_change_is_401(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    caller = token_login(client)
    response = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(caller["access_token"]),
    )
    assert response.status_code == 204, response.text
    assert refresh(client, pair["refresh_token"]).status_code == 401
    assert refresh(client, caller["refresh_token"]).status_code == 401


def test_refresh_after_deleting_the_family_is_401(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    family_id = current_family_id(client, pair["access_token"])
    response = client.delete(f"/auth/sessions/{family_id}", headers=bearer(pair["access_token"]))
    assert response.status_code == 204, response.text
    assert refresh(client, pair["refresh_token"]).status_code == 401


def test_refresh_does_not_revive_a_deleted_family_after_a_rotation(client: TestClient) -> None:
    register(client)
    pair = token_login(client)
    rotated = refresh(client, pair["refresh_token"]).json()
    family_id = current_family_id(client, rotated["access_token"])
    other = token_login(client)
    response = client.delete(f"/auth/sessions/{family_id}", headers=bearer(other["access_token"]))
    assert response.status_code == 204, response.text
    assert refresh(client, rotated["refresh_token"]).status_code == 401
    assert bearer_me_status(client, rotated["access_token"]) == 401
    assert refresh(client, other["refresh_token"]).status_code == 200


# response headers and storage ----------------------------------------------------------


def test_token_responses_carry_cache_control_no_store(client: TestClient) -> None:
    register(client)
    response = client.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD, "client": "api"}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    rotated = refresh(client, response.json()["refresh_token"])
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    assert response.headers.get("pragma") in (None, "no-cache")


def _database_rows(path: Path) -> list[str]:
    """Every cell of every table, as text (committed WAL content included)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        cells: list[str] = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                cells.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
        return cells
    finally:
        connection.close()


def test_the_store_keeps_only_sha256_of_refresh_tokens(client: TestClient) -> None:
    register(client)
    first = token_login(client)
    second = refresh(client, first["refresh_token"]).json()
    settings: Settings = client.app.state.gatepass.settings  # type: ignore[attr-defined]
    database = Path(settings.data_dir) / "gatepass.db"
    assert database.exists()

    cells = _database_rows(database)
    raw_files = b"".join(
        p.read_bytes() for p in database.parent.iterdir() if p.name.startswith("gatepass.db")
    )
    for token in (first["refresh_token"], second["refresh_token"]):
        assert not any(token in cell for cell in cells)
        assert token.encode() not in raw_files
        assert hashlib.sha256(token.encode()).hexdigest() in cells


# key pick-up by a node that only issues tokens -----------------------------------------


def test_refresh_signs_with_a_key_rotated_elsewhere_once_the_reload_interval_passed(
    client: TestClient, clock: FakeClock
) -> None:
    from gatepass.keys import KEY_RELOAD_SECONDS

    register(client)
    pair = token_login(client)
    old_kid = jwt_header(pair["access_token"])["kid"]
    settings: Settings = client.app.state.gatepass.settings  # type: ignore[attr-defined]

    async def rotate_elsewhere() -> str:
        # What `gatepass keys rotate` does: another process on the same database.
        other = await Gatepass.open(settings, clock=clock)
        try:
            return (await other.keys.rotate()).kid
        finally:
            await other.close()

    new_kid = asyncio.run(rotate_elsewhere())
    assert new_kid != old_kid
    clock.advance(KEY_RELOAD_SECONDS + 1)
    # Only issuing traffic: no verification, no JWKS request.
    rotated = refresh(client, pair["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert jwt_header(rotated.json()["access_token"])["kid"] == new_kid
