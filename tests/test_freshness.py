"""auth_time and amr: kept for every session and family, carried by access tokens
(RFC 9068 section 2.2.1, RFC 8176 values), shown by GET /auth/me."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from gatepass.errors import InvalidToken, ReauthenticationRequired
from gatepass.freshness import SignInProof, is_fresh, parse_amr, require_fresh
from gatepass.tokens import validate_claims
from tests.conftest import FakeClock, bearer, login, register, token_login


def claims_of(access_token: str) -> dict[str, Any]:
    return dict(jwt.decode(access_token, options={"verify_signature": False}))


def test_a_token_login_carries_auth_time_and_amr_and_a_refresh_keeps_them(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    signed_in = int(clock())
    pair = token_login(client)
    assert claims_of(pair["access_token"])["auth_time"] == signed_in
    assert claims_of(pair["access_token"])["amr"] == ["pwd"]
    clock.advance(3600)
    rotated = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    claims = claims_of(rotated["access_token"])
    assert claims["iat"] == signed_in + 3600
    assert claims["auth_time"] == signed_in  # a refresh is not a sign-in
    me = client.get("/auth/me", headers=bearer(rotated["access_token"])).json()
    assert (me["auth_time"], me["amr"]) == (signed_in, ["pwd"])


def test_a_web_session_shows_when_and_how_it_signed_in(
    client: TestClient, clock: FakeClock
) -> None:
    register(client)
    login(client)
    clock.advance(120)
    me = client.get("/auth/me").json()
    assert (me["auth_time"], me["amr"]) == (int(clock()) - 120, ["pwd"])


def test_two_methods_make_a_multi_factor_proof() -> None:
    assert SignInProof.now(10.7, "pwd").amr == ("pwd",)
    proof = SignInProof.now(10.7, "pwd", "otp")
    assert proof.amr == ("pwd", "otp", "mfa")
    assert proof.auth_time == 10.0
    assert proof.has_second_factor


def test_freshness_is_measured_from_auth_time() -> None:
    assert is_fresh(1000.0, 1300.0, 300)
    assert not is_fresh(1000.0, 1300.5, 300)
    assert not is_fresh(0.0, 1.0, 300)  # no proof on record is never fresh
    with pytest.raises(ReauthenticationRequired) as raised:
        require_fresh(1000.0, 2000.0, 300)
    assert raised.value.code == "reauthentication_required"
    assert raised.value.status == 403


@pytest.mark.parametrize("amr", ["pwd", [1], {"a": 1}, [None]])
def test_a_token_with_a_malformed_amr_claim_is_refused(amr: object) -> None:
    claims = {
        "iss": "i",
        "aud": "a",
        "sub": "s",
        "jti": "j",
        "sid": "f",
        "roles": [],
        "iat": 100,
        "exp": 1000,
        "auth_time": 100,
        "amr": amr,
    }
    with pytest.raises(InvalidToken):
        validate_claims(claims, issuer="i", audience="a", now=200, leeway=0)


def test_a_token_claiming_a_future_sign_in_is_refused() -> None:
    claims = {"iss": "i", "aud": "a", "sub": "s", "jti": "j", "sid": "f", "roles": []}
    claims.update(iat=100, exp=1000, auth_time=500)
    with pytest.raises(InvalidToken):
        validate_claims(claims, issuer="i", audience="a", now=200, leeway=10)


def test_unknown_amr_values_are_dropped_not_trusted() -> None:
    assert parse_amr(["pwd", "PWD", "otp ", "x" * 40, "hwk"]) == ("pwd", "hwk")
    assert parse_amr("pwd otp") == ("pwd", "otp")
    assert parse_amr(None) == ()
