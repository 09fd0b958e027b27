"""Unit tests of the key ring, key rotation and access tokens, plus interoperability of
the published JWKS with an independent JOSE library (joserfc)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError, InvalidClaimError, SecurityWarning
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from gatepass import cli
from gatepass.keys import KEY_RELOAD_SECONDS, KeyRing, plan_rotation
from gatepass.stores.base import SigningKeyRecord
from gatepass.stores.sql import SqlStore
from gatepass.tokens import AccessTokens, InvalidToken
from tests.conftest import PASSWORD, FakeClock, register

T = TypeVar("T")
ASYMMETRIC = ("EdDSA", "ES256", "RS256")
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
PUBLIC_JWK_MEMBERS = {
    "EdDSA": {"kty", "crv", "x"},
    "ES256": {"kty", "crv", "x", "y"},
    "RS256": {"kty", "n", "e"},
}
ISSUER = "https://auth.example"
AUDIENCE = "api.example"
TTL = 900
LEEWAY = 10
NOW = 1_800_000_000.0


def run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def segment(token: str, index: int) -> dict[str, Any]:
    raw = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))))


def record(
    kid: str, alg: str, state: Any, *, created: float = 0.0, retired: float | None = None
) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=kid,
        alg=alg,
        state=state,
        private_material=f"material-{kid}",
        created_at=created,
        retired_at=retired,
    )


# plan_rotation ------------------------------------------------------------------


def test_plan_rotation_is_pure_and_leaves_its_input_alone() -> None:
    keys = [
        record("old", "EdDSA", "retired", retired=NOW - 10_000),
        record("cur", "EdDSA", "current"),
        record("nxt", "EdDSA", "next"),
    ]
    before = copy.deepcopy(keys)
    first = plan_rotation(keys, "EdDSA", NOW, 3600, force=True)
    second = plan_rotation(keys, "EdDSA", NOW, 3600, force=True)
    assert keys == before
    # same decisions both times; only the freshly generated next key differs
    assert first.deletes == second.deletes == ("old",)
    assert first.upserts[:2] == second.upserts[:2]
    assert first.upserts[2].kid != second.upserts[2].kid


def test_forced_rotation_retires_current_promotes_next_and_makes_a_new_next() -> None:
    keys = [record("cur", "EdDSA", "current"), record("nxt", "EdDSA", "next")]
    plan = plan_rotation(keys, "EdDSA", NOW, 3600, force=True)
    by_kid = {k.kid: k for k in plan.upserts}
    assert by_kid["cur"].state == "retired"
    assert by_kid["cur"].retired_at == NOW
    assert by_kid["cur"].private_material == "material-cur"
    assert by_kid["nxt"].state == "current"
    assert by_kid["nxt"].private_material == "material-nxt"  # the published key, not a new one
    (new,) = [k for k in plan.upserts if k.kid not in ("cur", "nxt")]
    assert new.state == "next"
    assert new.alg == "EdDSA"
    assert new.private_material.startswith("-----BEGIN PRIVATE KEY-----")
    assert plan.deletes == ()


def test_rotation_without_force_changes_nothing_while_a_current_key_of_the_algorithm_exists() -> (
    None
):
    keys = [record("cur", "ES256", "current"), record("nxt", "ES256", "next")]
    plan = plan_rotation(keys, "ES256", NOW, 3600, force=False)
    assert plan.upserts == ()
    assert plan.deletes == ()


def test_empty_ring_gets_a_current_and_a_next_key() -> None:
    plan = plan_rotation([], "RS256", NOW, 3600, force=False)
    assert sorted(k.state for k in plan.upserts) == ["current", "next"]
    assert {k.alg for k in plan.upserts} == {"RS256"}
    assert len({k.kid for k in plan.upserts}) == 2


def test_retired_keys_are_dropped_only_after_the_retention() -> None:
    retention = 3600.0
    keys = [
        record("cur", "EdDSA", "current"),
        record("due", "EdDSA", "retired", retired=NOW - retention),
        record("young", "EdDSA", "retired", retired=NOW - retention + 1),
    ]
    plan = plan_rotation(keys, "EdDSA", NOW, retention, force=False)
    assert plan.deletes == ("due",)
    assert plan.upserts == ()


def test_algorithm_change_rotates_without_force() -> None:
    keys = [record("cur", "EdDSA", "current"), record("nxt", "EdDSA", "next")]
    plan = plan_rotation(keys, "ES256", NOW, 3600, force=False)
    by_kid = {k.kid: k for k in plan.upserts}
    assert by_kid["cur"].state == "retired"
    assert by_kid["cur"].retired_at == NOW
    new = [k for k in plan.upserts if k.kid not in ("cur", "nxt")]
    assert sorted(k.state for k in new) == ["current", "next"]
    assert {k.alg for k in new} == {"ES256"}
    assert plan.deletes == ("nxt",)  # the stale EdDSA next key will never sign


def test_algorithm_change_promotes_a_waiting_next_key_of_the_new_algorithm() -> None:
    keys = [record("cur", "EdDSA", "current"), record("es-next", "ES256", "next")]
    plan = plan_rotation(keys, "ES256", NOW, 3600, force=False)
    by_kid = {k.kid: k for k in plan.upserts}
    assert by_kid["es-next"].state == "current"
    assert by_kid["cur"].state == "retired"


# KeyRing over a real SqlStore -------------------------------------------------------


@dataclass
class Ring:
    store: SqlStore
    ring: KeyRing
    tokens: AccessTokens
    clock: FakeClock


@asynccontextmanager
async def open_ring(
    path: Path,
    alg: str,
    clock: FakeClock,
    *,
    retention: float = TTL + LEEWAY + KEY_RELOAD_SECONDS,
    ttl: int = TTL,
) -> AsyncIterator[Ring]:
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.start()
    try:
        ring = KeyRing(store, alg, retention, clock)
        await ring.start()
        tokens = AccessTokens(
            ring, issuer=ISSUER, audience=AUDIENCE, ttl=ttl, leeway=LEEWAY, clock=clock
        )
        yield Ring(store, ring, tokens, clock)
    finally:
        await store.close()


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_jwks_publishes_public_keys_only_with_kid_alg_and_use(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", alg, clock) as r:
            stored = {k.kid: k for k in await r.store.list_signing_keys()}
            jwks = r.ring.jwks()
            assert set(jwks) == {"keys"}
            assert {k["kid"] for k in jwks["keys"]} == set(stored)  # current and next
            for jwk in jwks["keys"]:
                # PyJWT adds key_ops to RSA keys; RFC 7517 §4.3 allows it when consistent
                assert jwk.pop("key_ops", ["verify"]) == ["verify"]
                assert set(jwk) == PUBLIC_JWK_MEMBERS[alg] | {"kid", "alg", "use"}
                assert not set(jwk) & PRIVATE_JWK_MEMBERS
                assert jwk["alg"] == alg
                assert jwk["use"] == "sig"
                text = json.dumps(jwk)
                pem_body = "".join(stored[jwk["kid"]].private_material.splitlines()[1:-1])
                assert pem_body[:40] not in text

    run(body())


def test_hs256_jwks_is_empty(tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", "HS256", clock) as r:
            assert len(list(r.ring.keys())) == 2
            assert r.ring.jwks() == {"keys": []}

    run(body())


def test_hs256_jwks_over_http_is_empty(make_client: Callable[..., TestClient]) -> None:
    client = make_client(jwt_algorithm="HS256")
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json() == {"keys": []}


@pytest.mark.parametrize("alg", ["EdDSA", "HS256"])
def test_jwks_cache_max_age_equals_the_key_reload_interval(
    make_client: Callable[..., TestClient], alg: str
) -> None:
    client = make_client(jwt_algorithm=alg)
    response = client.get("/.well-known/jwks.json")
    match = re.search(r"(?:^|,)\s*max-age=(\d+)\s*(?:,|$)", response.headers["cache-control"])
    assert match is not None, response.headers["cache-control"]
    assert int(match.group(1)) == KEY_RELOAD_SECONDS


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "HS256"])
def test_access_token_header_and_claims_have_the_rfc9068_shape(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", alg, clock) as r:
            issued = r.tokens.issue("user-1", "family-1", ["user"])
            header = segment(issued.token, 0)
            claims = segment(issued.token, 1)
            assert header == {"alg": alg, "kid": r.ring.signing_key().kid, "typ": "at+jwt"}
            assert set(claims) == {"iss", "aud", "sub", "exp", "iat", "jti", "sid", "roles"}
            assert claims["iss"] == ISSUER
            assert claims["aud"] == AUDIENCE
            assert claims["sub"] == "user-1"
            assert claims["sid"] == "family-1"
            assert claims["roles"] == ["user"]
            assert claims["iat"] == int(NOW)
            assert claims["exp"] == int(NOW) + TTL
            assert issued.expires_in == TTL
            verified = await r.tokens.verify(issued.token)
            assert verified == issued.claims

    run(body())


def test_each_access_token_gets_a_fresh_jti(tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", "EdDSA", clock) as r:
            jtis = {r.tokens.issue("u", "f", []).claims.jti for _ in range(50)}
            assert len(jtis) == 50

    run(body())


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "HS256"])
def test_tokens_of_a_retired_key_verify_until_they_expire(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", alg, clock) as r:
            old = r.tokens.issue("u", "f", ["user"])
            old_kid = r.ring.signing_key().kid
            await r.ring.rotate()
            states = {k.kid: k.state for k in await r.store.list_signing_keys()}
            assert states[old_kid] == "retired"
            clock.advance(TTL + LEEWAY - 1)
            await r.ring.refresh_if_stale()
            assert (await r.tokens.verify(old.token)).jti == old.claims.jti
            clock.advance(1)
            with pytest.raises(InvalidToken) as caught:
                await r.tokens.verify(old.token)
            assert caught.value.reason == "expired"

    run(body())


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "HS256"])
def test_after_rotation_new_tokens_carry_the_pre_published_next_kid(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", alg, clock) as r:
            before = r.ring.signing_key().kid
            (waiting,) = [k.kid for k in await r.store.list_signing_keys() if k.state == "next"]
            assert r.tokens.issue("u", "f", []).token.split(".")[0]
            rotated = await r.ring.rotate()
            assert rotated.kid == waiting != before
            token = r.tokens.issue("u", "f", []).token
            assert segment(token, 0)["kid"] == waiting
            await r.tokens.verify(token)

    run(body())


async def _rotate_until_removed(r: Ring, kid: str) -> None:
    """Rotate, wait out the (short) retention, rotate twice more: ``kid`` is dropped."""
    await r.ring.rotate()
    clock = r.clock
    clock.advance(59)
    await r.ring.rotate()  # retention not over yet: the first key stays
    assert r.ring.get(kid) is not None
    clock.advance(1)
    await r.ring.rotate()  # now it is dropped
    assert kid not in {k.kid for k in await r.store.list_signing_keys()}
    assert r.ring.get(kid) is None


@pytest.mark.parametrize("alg", ["EdDSA", "HS256"])
def test_a_removed_keys_tokens_fail_and_it_leaves_the_jwks(
    tmp_path: Path, clock: FakeClock, alg: str
) -> None:
    async def body() -> None:
        # A short retention next to a long ttl: the token is unexpired when its key goes,
        # so the failure below is the key's removal and nothing else.
        async with open_ring(tmp_path / "k.db", alg, clock, retention=60, ttl=3600) as r:
            token = r.tokens.issue("u", "f", []).token
            old_kid = r.ring.signing_key().kid
            await _rotate_until_removed(r, old_kid)
            assert old_kid not in {k["kid"] for k in r.ring.jwks()["keys"]}
            with pytest.raises(InvalidToken) as caught:
                await r.tokens.verify(token)
            assert caught.value.reason == "unknown kid"

    run(body())


def test_a_token_verified_before_its_key_was_removed_fails_after_the_removal(
    tmp_path: Path, clock: FakeClock
) -> None:
    async def body() -> None:
        async with open_ring(tmp_path / "k.db", "EdDSA", clock, retention=60, ttl=3600) as r:
            token = r.tokens.issue("u", "f", []).token
            old_kid = r.ring.signing_key().kid
            await r.tokens.verify(token)  # verified (and remembered) while the key exists
            await _rotate_until_removed(r, old_kid)
            with pytest.raises(InvalidToken):
                await r.tokens.verify(token)

    run(body())


def test_a_second_node_learns_a_rotation_within_the_reload_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two rings on one store: the rotation on node A reaches node B's verification."""

    async def body() -> None:
        path = tmp_path / "k.db"
        async with open_ring(path, "EdDSA", clock) as a, open_ring(path, "EdDSA", clock) as b:
            assert a.ring.signing_key().kid == b.ring.signing_key().kid
            await a.ring.rotate()
            token = a.tokens.issue("u", "f", []).token
            await b.tokens.verify(token)  # the new key was published to B as "next"
            clock.advance(KEY_RELOAD_SECONDS)
            await b.ring.refresh_if_stale()
            assert b.ring.signing_key().kid == a.ring.signing_key().kid

    run(body())


# over HTTP: rotation by the CLI without a restart ------------------------------------


def _mobile_token(client: TestClient) -> str:
    response = client.post(
        "/auth/login",
        json={"email": "ada@example.com", "password": PASSWORD, "client": "mobile"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _cli_rotate(database_url: str) -> str:
    result = CliRunner().invoke(
        cli.main, ["keys", "rotate"], env={"GATEPASS_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output
    match = re.search(r"signing key is now (\S+)", result.output)
    assert match is not None, result.output
    return match.group(1)


def test_token_of_the_key_rotated_in_by_the_cli_verifies_at_once_on_a_running_server(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gp.db'}"
    server = make_client(database_url=url)
    register(server)
    old = _mobile_token(server)
    published = {k["kid"] for k in server.get("/.well-known/jwks.json").json()["keys"]}
    new_kid = _cli_rotate(url)
    assert new_kid in published  # it was already the published "next" key
    assert new_kid != segment(old, 0)["kid"]
    # the old token still works: its key is retired, not removed
    assert server.get("/auth/me", headers={"Authorization": f"Bearer {old}"}).status_code == 200


def test_after_cli_rotation_a_running_server_signs_with_the_new_kid_within_the_reload_interval(
    make_client: Callable[..., TestClient], clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gp.db'}"
    server = make_client(database_url=url)
    register(server)
    new_kid = _cli_rotate(url)
    clock.advance(KEY_RELOAD_SECONDS + 1)
    assert segment(_mobile_token(server), 0)["kid"] == new_kid


# interoperability: joserfc with only the published JWKS ------------------------------


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_access_token_verifies_with_joserfc_using_only_the_published_jwks(
    make_client: Callable[..., TestClient], clock: FakeClock, alg: str
) -> None:
    client = make_client(jwt_algorithm=alg, issuer=ISSUER, audience=AUDIENCE)
    register(client)
    token = _mobile_token(client)
    jwks_json = client.get("/.well-known/jwks.json").text
    key_set = KeySet.import_key_set(json.loads(jwks_json))
    with warnings.catch_warnings():
        # joserfc flags the "EdDSA" name as superseded by "Ed25519" (RFC 9864); not our test.
        warnings.filterwarnings("ignore", category=SecurityWarning, message="EdDSA")
        decoded = jose_jwt.decode(token, key_set, algorithms=[alg])
        header_b64, payload_b64, signature_b64 = token.split(".")
        forged = f"{header_b64}.{payload_b64}.{signature_b64[::-1]}"
        with pytest.raises(BadSignatureError):  # control: joserfc really checks
            jose_jwt.decode(forged, key_set, algorithms=[alg])
    assert decoded.header["alg"] == alg
    assert decoded.header["typ"] == "at+jwt"
    registry = jose_jwt.JWTClaimsRegistry(
        now=int(clock()),
        leeway=LEEWAY,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
        iat={"essential": True},
    )
    registry.validate(decoded.claims)
    wrong = jose_jwt.JWTClaimsRegistry(
        now=int(clock()), iss={"essential": True, "value": "https://other.example"}
    )
    with pytest.raises(InvalidClaimError):  # control: the registry is not vacuous
        wrong.validate(decoded.claims)
