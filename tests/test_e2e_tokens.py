"""End-to-end token tests against the real ``gatepass serve`` process over real HTTP:
atomic refresh rotation under concurrency, and signing-key rotation by the CLI while
the server runs (no restart).

One server serves the whole module (each test uses its own user) so that the key
rotation test's wait for the reload interval overlaps with the other tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatepass.keys import KEY_RELOAD_SECONDS
from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, gatepass_command, running_server, server_env

pytestmark = pytest.mark.e2e

ENV = {"GATEPASS_DEV": "1"}
TIMEOUT = httpx.Timeout(30.0)
CONCURRENT_REFRESHES = 20
CLI_TIMEOUT = 30.0
#: A rotation must reach the running server within its reload interval (plus slack).
KEY_PICKUP_DEADLINE = KEY_RELOAD_SECONDS + 10.0
POLL_INTERVAL = 0.5


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gatepass-e2e-tokens")


@pytest.fixture(scope="module")
def server(server_dir: Path) -> Iterator[RunningServer]:
    with running_server(server_dir, ENV) as running:
        yield running
        assert "Traceback" not in running.logs(), running.logs()


def http(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=TIMEOUT)


def register_and_token_login(client: httpx.Client, email: str) -> dict[str, Any]:
    response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    response = client.post(
        "/auth/login", json={"email": email, "password": PASSWORD, "client": "mobile"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def jwt_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gatepass <args>`` in the server's folder, with the server's environment."""
    result = subprocess.run(
        [*gatepass_command(), *args],
        cwd=cwd,
        env=server_env(ENV),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def key_states(cwd: Path) -> dict[str, tuple[str, str]]:
    """``gatepass keys list`` as {kid: (alg, state)}."""
    rows: dict[str, tuple[str, str]] = {}
    for line in run_cli(cwd, "keys", "list").stdout.splitlines():
        if line.strip():
            kid, alg, state = line.split()[:3]
            rows[kid] = (alg, state)
    return rows


async def refresh_all_at_once(url: str, refresh_token: str, n: int) -> list[httpx.Response]:
    """``n`` refreshes with one token, released together on open connections."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as client:
        # Open n connections first, so that no request waits for a TCP handshake.
        warm = await asyncio.gather(*(client.get("/healthz") for _ in range(n)))
        assert all(r.status_code == 200 for r in warm)
        gate = asyncio.Event()

        async def one() -> httpx.Response:
            await gate.wait()
            return await client.post("/auth/refresh", json={"refresh_token": refresh_token})

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)  # every task is now waiting at the gate
        gate.set()
        return list(await asyncio.gather(*tasks))


# concurrent refreshes -------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_twenty_concurrent_refreshes_with_one_token_yield_exactly_one_200(
    server: RunningServer, round_: int
) -> None:
    with http(server) as client:
        pair = register_and_token_login(client, f"racer{round_}@example.com")
    responses = asyncio.run(
        refresh_all_at_once(server.url, pair["refresh_token"], CONCURRENT_REFRESHES)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (CONCURRENT_REFRESHES - 1), statuses
    (winner,) = [r for r in responses if r.status_code == 200]
    assert winner.headers["cache-control"] == "no-store"
    assert set(winner.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    for loser in (r for r in responses if r.status_code == 401):
        assert loser.headers["content-type"].startswith("application/problem+json")
        assert pair["refresh_token"] not in loser.text
    with http(server) as client:
        # The raced token is spent for good.
        again = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert again.status_code == 401
        assert client.get("/healthz").status_code == 200


# signing-key rotation -------------------------------------------------------------------


def test_keys_rotate_reaches_the_running_server_without_a_restart(
    server: RunningServer, server_dir: Path
) -> None:
    before = key_states(server_dir)
    assert sorted(state for _, state in before.values()) == ["current", "next"]
    (old_kid,) = [kid for kid, (_, state) in before.items() if state == "current"]
    (next_kid,) = [kid for kid, (_, state) in before.items() if state == "next"]
    assert {alg for alg, _ in before.values()} == {"EdDSA"}

    with http(server) as client:
        pair = register_and_token_login(client, "rotator@example.com")
        old_token = pair["access_token"]
        assert jwt_header(old_token)["kid"] == old_kid
        # A second token signed by the old key, first presented only after the server
        # switched keys: its signature is then checked against the retired key (the
        # server remembers tokens it already verified, so ``old_token`` would not show it).
        unseen_old = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert unseen_old.status_code == 200, unseen_old.text
        unseen_old_token = unseen_old.json()["access_token"]
        assert jwt_header(unseen_old_token)["kid"] == old_kid
        pid = server.pid

        rotated = run_cli(server_dir, "keys", "rotate")
        assert next_kid in rotated.stdout  # the published next key now signs

        after = key_states(server_dir)
        assert after[old_kid][1] == "retired"
        assert after[next_kid][1] == "current"
        assert sorted(state for _, state in after.values()) == ["current", "next", "retired"]

        # Bounded wait, with a client's ordinary traffic: refresh, then use the new token.
        refresh_token = unseen_old.json()["refresh_token"]
        newest_kid = old_kid
        deadline = time.monotonic() + KEY_PICKUP_DEADLINE
        while time.monotonic() < deadline:
            response = client.post("/auth/refresh", json={"refresh_token": refresh_token})
            assert response.status_code == 200, response.text
            refresh_token = response.json()["refresh_token"]
            newest = response.json()["access_token"]
            newest_kid = jwt_header(newest)["kid"]
            if newest_kid == next_kid:
                break
            me = client.get("/auth/me", headers={"Authorization": f"Bearer {newest}"})
            assert me.status_code == 200, me.text
            time.sleep(POLL_INTERVAL)
        assert newest_kid == next_kid, f"no new kid within {KEY_PICKUP_DEADLINE} s"
        assert server.process.poll() is None
        assert server.pid == pid  # same process: no restart

        new_me = client.get("/auth/me", headers={"Authorization": f"Bearer {newest}"})
        assert new_me.status_code == 200, new_me.text
        assert new_me.json()["email"] == "rotator@example.com"
        for token in (unseen_old_token, old_token):  # signed by the now retired key
            old_me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert old_me.status_code == 200, old_me.text

        jwks = client.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        published = {key["kid"]: key for key in jwks.json()["keys"]}
        assert {old_kid, next_kid} <= set(published)
        for kid in (old_kid, next_kid):
            assert published[kid]["alg"] == "EdDSA"
            assert published[kid]["use"] == "sig"
            assert "d" not in published[kid]  # public halves only


def test_keys_list_shows_each_keys_algorithm_state_and_dates(
    server: RunningServer, server_dir: Path
) -> None:
    assert server.process.poll() is None  # listed while the server runs on the same store
    output = run_cli(server_dir, "keys", "list").stdout
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    for line in lines:
        fields = line.split()
        assert fields[1] == "EdDSA"
        assert fields[2] in {"next", "current", "retired"}
        assert "created" in fields
        assert "retired" in fields
    assert "PRIVATE KEY" not in output
