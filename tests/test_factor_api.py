"""The TOTP and recovery-code routes over HTTP (DESIGN §3.3): set-up, confirmation,
removal and new recovery codes, for cookie and Bearer callers, and what a caller
without a credential, without the CSRF token or with a stale sign-in gets."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from gatepass.mfa import TOTP_STEP_SECONDS
from tests.conftest import FakeClock, bearer, login, register, token_login

MakeClient = Callable[..., TestClient]
SETUP = "/auth/mfa/totp/setup"
CONFIRM = "/auth/mfa/totp/confirm"
TOTP = "/auth/mfa/totp"
RECOVERY = "/auth/mfa/recovery-codes"
#: Every route here: method, path, body.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", SETUP, None),
    ("POST", CONFIRM, {"code": "123456"}),
    ("DELETE", TOTP, {"code": "123456"}),
    ("POST", RECOVERY, None),
]
ROUTE_IDS = ["setup", "confirm", "remove", "recovery-codes"]
#: Past GATEPASS_FRESH_AUTH_MAX_AGE (300 s), within the session idle timeout.
STALE = 301
RECOVERY_CODE_SHAPE = re.compile(r"^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$")


class Caller:
    """A signed-in caller: cookie + CSRF token (web) or a Bearer token."""

    def __init__(
        self, client: TestClient, *, web: bool = True, email: str = "ada@example.com"
    ) -> None:
        self.client = client
        if web:
            self.headers = {"X-CSRF-Token": login(client, email)}
        else:
            self.headers = bearer(token_login(client, email)["access_token"])

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.request(method, path, json=body, headers=self.headers)

    def setup(self) -> dict[str, Any]:
        response = self.send("POST", SETUP)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def confirm(self, code: str) -> Any:
        return self.send("POST", CONFIRM, {"code": code})

    def activate(self, clock: FakeClock) -> tuple[str, list[str]]:
        """Set up and confirm TOTP; then move one step on (the confirming code is spent)."""
        secret = str(self.setup()["secret"])
        confirmed = self.confirm(code_of(secret, clock))
        assert confirmed.status_code == 200, confirmed.text
        clock.advance(TOTP_STEP_SECONDS)
        return secret, list(confirmed.json()["recovery_codes"])


def code_of(secret: str, clock: FakeClock) -> str:
    return pyotp.TOTP(secret).at(clock())


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    made = make_client()
    register(made)
    return made


@pytest.mark.parametrize("web", [True, False], ids=["cookie", "bearer"])
def test_totp_is_set_up_confirmed_and_removed(
    client: TestClient, clock: FakeClock, web: bool
) -> None:
    caller = Caller(client, web=web)
    setup = caller.send("POST", SETUP)
    assert setup.status_code == 200, setup.text
    assert setup.headers["cache-control"] == "no-store"
    body = setup.json()
    assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
    assert re.fullmatch(r"[A-Z2-7]{32}", body["secret"])
    uri = pyotp.parse_uri(body["otpauth_uri"])
    assert uri.secret == body["secret"]
    assert uri.issuer == "testserver"  # the public URL's host
    assert uri.name == "ada@example.com"
    assert body["qr_svg"].startswith("<svg")

    confirmed = caller.confirm(code_of(body["secret"], clock))
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    codes = confirmed.json()["recovery_codes"]
    assert len(set(codes)) == 10
    assert all(RECOVERY_CODE_SHAPE.fullmatch(code) for code in codes)

    clock.advance(TOTP_STEP_SECONDS)
    removed = caller.send("DELETE", TOTP, {"code": code_of(body["secret"], clock)})
    assert removed.status_code == 204, removed.text
    assert removed.headers["cache-control"] == "no-store"
    # Gone: it may be set up again, and there are no recovery codes to renew.
    assert_problem(caller.send("POST", RECOVERY), 409)
    assert caller.send("POST", SETUP).status_code == 200


def test_a_session_keeps_its_id_through_factor_changes(
    client: TestClient, clock: FakeClock
) -> None:
    caller = Caller(client)
    before = client.cookies.get("__Host-gatepass_session")
    caller.activate(clock)
    assert client.cookies.get("__Host-gatepass_session") == before
    assert client.get("/auth/me").status_code == 200


def test_new_recovery_codes_kill_the_old_ones(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    _, old = caller.activate(clock)
    renewed = caller.send("POST", RECOVERY)
    assert renewed.status_code == 200, renewed.text
    assert renewed.headers["cache-control"] == "no-store"
    new = renewed.json()["recovery_codes"]
    assert len(new) == 10
    assert not set(new) & set(old)
    # An old code no longer removes TOTP; a new one does.
    assert_problem(caller.send("DELETE", TOTP, {"code": old[0]}), 422)
    assert caller.send("DELETE", TOTP, {"code": new[0]}).status_code == 204


def test_used_recovery_code_cannot_remove_totp_again(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    _, codes = caller.activate(clock)
    assert caller.send("DELETE", TOTP, {"code": codes[0]}).status_code == 204
    caller.activate(clock)
    assert_problem(caller.send("DELETE", TOTP, {"code": codes[0]}), 422)


def test_wrong_code_does_not_activate_totp(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    secret = caller.setup()["secret"]
    assert_problem(caller.confirm(other_than(code_of(secret, clock))), 422)
    # Still pending: no recovery codes to renew, and a new set-up is allowed.
    assert_problem(caller.send("POST", RECOVERY), 409)
    assert caller.send("POST", SETUP).status_code == 200


def test_setting_up_an_active_totp_again_is_a_conflict(
    client: TestClient, clock: FakeClock
) -> None:
    caller = Caller(client)
    caller.activate(clock)
    assert_problem(caller.send("POST", SETUP), 409)


def test_replayed_totp_code_cannot_remove_totp(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    secret = caller.setup()["secret"]
    code = code_of(secret, clock)
    assert caller.confirm(code).status_code == 200
    # Same window, same code: its step is spent.
    assert_problem(caller.send("DELETE", TOTP, {"code": code}), 422)
    assert_problem(caller.send("POST", SETUP), 409)  # still active


def test_wrong_code_cannot_remove_totp(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    secret, _ = caller.activate(clock)
    assert_problem(caller.send("DELETE", TOTP, {"code": other_than(code_of(secret, clock))}), 422)
    assert_problem(caller.send("POST", SETUP), 409)


@pytest.mark.parametrize(
    "body",
    [{}, {"code": 123456}, {"code": ["123456"]}, {"code": None}, {"code": "x" * 5000}],
    ids=["missing", "number", "list", "null", "huge"],
)
@pytest.mark.parametrize("path", [CONFIRM, TOTP], ids=["confirm", "remove"])
def test_malformed_code_is_422(
    client: TestClient, clock: FakeClock, path: str, body: dict[str, Any]
) -> None:
    caller = Caller(client)
    if path == TOTP:
        caller.activate(clock)
    else:
        caller.setup()
    assert_problem(caller.send("POST" if path == CONFIRM else "DELETE", path, body), 422)


@pytest.mark.parametrize("junk", ["", "abcdef", "12345", "1234567", "١٢٣٤٥٦", "\x00" * 6])
def test_junk_codes_are_422_never_500(client: TestClient, clock: FakeClock, junk: str) -> None:
    caller = Caller(client)
    caller.setup()
    assert_problem(caller.confirm(junk), 422)
    caller.activate(clock)
    assert_problem(caller.send("DELETE", TOTP, {"code": junk}), 422)


def test_lone_surrogates_as_a_code_are_422_never_500(client: TestClient, clock: FakeClock) -> None:
    caller = Caller(client)
    caller.activate(clock)
    raw = rb'{"code": "\ud800\ud800\ud800-\udc00\udc00\udc00\udc00\udc00"}'
    headers = {**caller.headers, "Content-Type": "application/json"}
    assert_problem(client.request("DELETE", TOTP, content=raw, headers=headers), 422)


def test_malformed_json_body_is_refused(client: TestClient) -> None:
    caller = Caller(client)
    response = client.post(
        SETUP, content=b'{"oops": ', headers={**caller.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)


# attacks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_unauthenticated_factor_change_is_refused(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert_problem(client.request(method, path, json=body), 401)
    garbage = bearer("not.a.token")
    assert_problem(client.request(method, path, json=body, headers=garbage), 401)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_cross_site_factor_change_without_csrf_token_is_refused(
    client: TestClient, clock: FakeClock, method: str, path: str, body: dict[str, Any] | None
) -> None:
    caller = Caller(client)
    secret, _ = caller.activate(clock) if path != CONFIRM else (caller.setup()["secret"], [])
    if body is not None:
        body = {"code": code_of(secret, clock)}
    assert_problem(client.request(method, path, json=body), 403)
    wrong = {"X-CSRF-Token": "forged"}
    assert_problem(client.request(method, path, json=body, headers=wrong), 403)
    foreign = {**caller.headers, "Origin": "https://evil.example"}
    assert_problem(client.request(method, path, json=body, headers=foreign), 403)
    # Nothing changed: the code still works where it would have.
    if path in (CONFIRM, TOTP):
        assert caller.send(method, path, body).status_code in (200, 204)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("web", [True, False], ids=["cookie", "bearer"])
def test_stale_sign_in_cannot_change_factors(
    client: TestClient,
    clock: FakeClock,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    web: bool,
) -> None:
    caller = Caller(client, web=web)
    secret, _ = caller.activate(clock) if path != CONFIRM else (caller.setup()["secret"], [])
    clock.advance(STALE)
    if body is not None:
        body = {"code": code_of(secret, clock)}
    problem = assert_problem(caller.send(method, path, body), 403)
    assert problem["code"] == "reauthentication_required"
    # Refused before anything changed: the TOTP is as it was.
    clock.advance(-STALE)
    if path == CONFIRM:
        assert caller.confirm(code_of(secret, clock)).status_code == 200
    else:
        assert_problem(caller.send("POST", SETUP), 409)


def test_one_users_factor_routes_never_touch_another_users(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    register(client)
    register(client, "mallory@example.com")
    _, ada_codes = Caller(client).activate(clock)
    client.cookies.clear()
    mallory = Caller(client, web=False, email="mallory@example.com")
    # Ada's recovery code is no code of Mallory's, and Mallory has no TOTP to remove.
    assert_problem(mallory.send("DELETE", TOTP, {"code": ada_codes[0]}), 422)
    assert_problem(mallory.send("POST", RECOVERY), 409)
    assert mallory.send("POST", SETUP).status_code == 200
