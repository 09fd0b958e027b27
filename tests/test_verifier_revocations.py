"""RevocationFeed, the resource server's side of the revocation feed, against real
``gatepass serve`` processes.

Each revocation test runs the feed in a process of its own
(tests/revocation_probe.py), as a resource server would, and measures from the
moment the auth server answered the revoking request to the moment the probe's
``check`` first refused the token: the contract is under a second. The outage
tests stop the auth server for real and start it again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatepass.errors import InvalidToken, RevocationsStale
from gatepass.stores.base import RevocationEvent
from gatepass.stores.redis_connection import connect
from gatepass.stores.redis_events import RedisEventBus
from gatepass.tokens import AccessClaims, PublicKey, TokenVerifier, key_from_jwk
from gatepass.verifier.revocations import RevocationFeed
from tests.conftest import PASSWORD
from tests.e2e_support import RunningServer, free_port, running_server

pytestmark = pytest.mark.e2e

FEED_TOKEN = "feed-token-0123456789abcdefghijklmnopqrstuvwxyz"
#: The issue's bound: a revocation on the server is refused elsewhere within this.
PROPAGATION_DEADLINE = 1.0
#: The probes' bound in the outage tests (short, so the tests are too).
SHORT_STALENESS = 2.0
#: How long a test waits for something that must happen (generous; not a measurement).
EVENTUALLY = 15.0
PROBE = Path(__file__).with_name("revocation_probe.py")
TIMEOUT = httpx.Timeout(30.0)


def server_env(**extra: str) -> dict[str, str]:
    return {"GATEPASS_DEV": "1", "GATEPASS_REVOCATION_FEED_TOKEN": FEED_TOKEN, **extra}


class Probe:
    """A RevocationFeed in another process, reporting each change of ``check``'s outcome."""

    def __init__(
        self,
        url: str,
        claims: Sequence[AccessClaims],
        *,
        max_staleness: float = 30.0,
        redis_url: str | None = None,
        token: str = FEED_TOKEN,
    ) -> None:
        config: dict[str, Any] = {
            "url": url,
            "token": token,
            "max_staleness": max_staleness,
            "claims": [asdict(c) for c in claims],
        }
        if redis_url is not None:
            config["redis_url"] = redis_url
        self.process = subprocess.Popen(
            [sys.executable, str(PROBE), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.history: list[str] = []
        self.state: dict[int, str] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def wait_for(self, index: int, outcome: str, timeout: float = EVENTUALLY) -> float:
        """The monotonic time at which claim ``index`` turned ``outcome`` (perhaps
        already, before this call)."""
        if self.state.get(index) == outcome:
            for line in reversed(self.history):
                parts = line.split()
                if parts[:2] == [str(index), outcome]:
                    return float(parts[2])
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"claim {index} not {outcome} within {timeout} s: {self.history} "
                    f"{self._stderr()}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.history.append(line)
            parts = line.split()
            if len(parts) == 3:
                self.state[int(parts[0])] = parts[1]
                if parts[:2] == [str(index), outcome]:
                    return float(parts[2])

    def outcomes(self, index: int) -> list[str]:
        """Every outcome claim ``index`` has had so far, in order."""
        return [p[1] for p in (line.split() for line in self.history) if p[0] == str(index)]

    def _stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
            self.process.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.process.kill()
            self.process.wait()


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    started: list[Probe] = []
    yield started
    for probe in started:
        probe.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("feed-server")
    with running_server(root, server_env()) as running:
        yield running
        assert "Traceback" not in running.logs(), running.logs()
        assert FEED_TOKEN not in running.logs()


# -- helpers: real accounts, real tokens, their verified claims -----------------------


class Account:
    """A user on the server, signed in as an API client."""

    def __init__(self, server: RunningServer, email: str) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=TIMEOUT)
        response = self.http.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        self.email = email

    def login(self) -> dict[str, Any]:
        response = self.http.post(
            "/auth/login", json={"email": self.email, "password": PASSWORD, "client": "api"}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, path: str, access_token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        return self.http.post(path, headers=headers, **kwargs)


def claims_of(server: RunningServer, access_token: str) -> AccessClaims:
    """The token's claims, verified as a resource server would: keys from the JWKS."""
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=TIMEOUT).json()
    keys: dict[str, PublicKey] = {k["kid"]: key_from_jwk(k) for k in jwks["keys"]}
    verifier = TokenVerifier(
        keys, issuer=server.url, audience="gatepass", leeway=10, clock=time.time
    )
    return verifier.verify(access_token)


def revoke_and_time(account: Account, path: str, **kwargs: Any) -> float:
    """Send the revoking request; the monotonic time its answer arrived."""
    response = account.post(path, **kwargs)
    done = time.monotonic()
    assert response.status_code in (204, 401), response.text
    return done


# -- revocations reach another process within a second ---------------------------------


def test_bearer_logout_is_refused_by_a_feed_in_another_process_within_a_second(
    server: RunningServer, probes: list[Probe]
) -> None:
    account = Account(server, "logout@example.com")
    pair = account.login()
    other = account.login()  # another family of the same user: must stay valid
    probe = Probe(
        server.url,
        [claims_of(server, pair["access_token"]), claims_of(server, other["access_token"])],
    )
    probes.append(probe)
    probe.wait_for(0, "ok")
    probe.wait_for(1, "ok")

    revoked_at = revoke_and_time(account, "/auth/logout", access_token=pair["access_token"])

    refused_at = probe.wait_for(0, "revoked")
    assert refused_at - revoked_at < PROPAGATION_DEADLINE
    assert probe.state[1] == "ok"


def test_logout_all_is_refused_by_a_feed_in_another_process_within_a_second(
    server: RunningServer, probes: list[Probe]
) -> None:
    account = Account(server, "everywhere@example.com")
    first, second = account.login(), account.login()
    probe = Probe(
        server.url,
        [claims_of(server, first["access_token"]), claims_of(server, second["access_token"])],
    )
    probes.append(probe)
    probe.wait_for(0, "ok")
    probe.wait_for(1, "ok")

    revoked_at = revoke_and_time(account, "/auth/logout-all", access_token=first["access_token"])

    assert probe.wait_for(0, "revoked") - revoked_at < PROPAGATION_DEADLINE
    assert probe.wait_for(1, "revoked") - revoked_at < PROPAGATION_DEADLINE


def test_refresh_token_reuse_is_refused_by_a_feed_in_another_process_within_a_second(
    server: RunningServer, probes: list[Probe]
) -> None:
    """A thief replays a rotated refresh token: the server revokes the family, so the
    access token the legitimate client got from the rotation dies everywhere."""
    account = Account(server, "reuse@example.com")
    stolen = account.login()
    rotated = account.post("/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    current = rotated.json()
    probe = Probe(server.url, [claims_of(server, current["access_token"])])
    probes.append(probe)
    probe.wait_for(0, "ok")

    revoked_at = revoke_and_time(
        account, "/auth/refresh", json={"refresh_token": stolen["refresh_token"]}
    )

    assert probe.wait_for(0, "revoked") - revoked_at < PROPAGATION_DEADLINE


# -- fail closed, and back ---------------------------------------------------------------


def test_a_feed_cut_off_from_the_server_refuses_tokens_once_stale_and_resumes(
    tmp_path: Path, probes: list[Probe]
) -> None:
    port = free_port()
    with running_server(tmp_path, server_env(), port=port) as first:
        account = Account(first, "outage@example.com")
        kept, revoked = account.login(), account.login()
        claims = [claims_of(first, kept["access_token"]), claims_of(first, revoked["access_token"])]
        probe = Probe(first.url, claims, max_staleness=SHORT_STALENESS)
        probes.append(probe)
        probe.wait_for(0, "ok")
    stopped_at = time.monotonic()

    # Unreachable: past its bound the feed vouches for nothing, so nothing passes.
    stale_at = probe.wait_for(0, "stale")
    assert stale_at - stopped_at <= SHORT_STALENESS + 1.0
    probe.wait_for(1, "stale")

    with running_server(tmp_path, server_env(), port=port) as second:
        # Back (a new process: the feed's cursor is from the old one, so it gets a
        # snapshot), and revocations flow again.
        probe.wait_for(0, "ok")
        probe.wait_for(1, "ok")
        account.http = httpx.Client(base_url=second.url, timeout=TIMEOUT)
        revoked_at = revoke_and_time(account, "/auth/logout", access_token=revoked["access_token"])
        assert probe.wait_for(1, "revoked") - revoked_at < PROPAGATION_DEADLINE
        assert probe.state[0] == "ok"


def test_a_feed_started_after_a_revocation_refuses_the_token_from_its_snapshot(
    server: RunningServer, probes: list[Probe]
) -> None:
    account = Account(server, "snapshot@example.com")
    pair = account.login()
    claims = claims_of(server, pair["access_token"])
    revoke_and_time(account, "/auth/logout", access_token=pair["access_token"])

    probe = Probe(server.url, [claims])
    probes.append(probe)

    probe.wait_for(0, "revoked")
    assert probe.outcomes(0) == ["stale", "revoked"]


def test_a_feed_with_a_wrong_token_never_vouches_for_a_token(server: RunningServer) -> None:
    account = Account(server, "wrongtoken@example.com")
    claims = claims_of(server, account.login()["access_token"])
    with RevocationFeed(server.url, token="not-the-feed-token-0123456789abcdef") as feed:
        assert not feed.wait_until_ready(1.0)
        with pytest.raises(RevocationsStale):
            feed.check(claims)


def test_a_feed_in_process_refuses_a_revoked_token_and_passes_a_live_one(
    server: RunningServer,
) -> None:
    account = Account(server, "inprocess@example.com")
    live, dead = account.login(), account.login()
    revoke_and_time(account, "/auth/logout", access_token=dead["access_token"])
    with RevocationFeed(server.url, token=FEED_TOKEN) as feed:
        assert feed.wait_until_ready(EVENTUALLY)
        feed.check(claims_of(server, live["access_token"]))
        with pytest.raises(InvalidToken):
            feed.check(claims_of(server, dead["access_token"]))


def test_misconfigured_feeds_are_refused_at_construction() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "http://example.com?x=1"}, "url"),
        ({"token": ""}, "token"),
        ({"token": "with space "}, "token"),
        ({"max_staleness": 0}, "max_staleness"),
        ({"max_staleness": float("inf")}, "max_staleness"),
        ({"max_staleness": 10, "poll_wait": 6}, "half of max_staleness"),
        ({"poll_wait": 31, "max_staleness": 100}, "poll_wait"),
        ({"redis_url": "redis+cluster://127.0.0.1:7000"}, "any one node"),
    ]
    for kwargs, message in cases:
        arguments: dict[str, Any] = {"url": "http://127.0.0.1:1", "token": FEED_TOKEN}
        arguments.update(kwargs)
        url = arguments.pop("url")
        with pytest.raises(ValueError, match=message):
            RevocationFeed(url, start=False, **arguments)


def test_feed_repr_hides_its_token() -> None:
    feed = RevocationFeed("http://127.0.0.1:1", token=FEED_TOKEN, start=False)
    assert FEED_TOKEN not in repr(feed)


# -- Redis ------------------------------------------------------------------------------


def test_revocation_over_a_shared_redis_is_refused_in_another_process_within_a_second(
    tmp_path: Path, redis_url: str, probes: list[Probe]
) -> None:
    with running_server(tmp_path, server_env(GATEPASS_REDIS_URL=redis_url)) as node:
        account = Account(node, "redis@example.com")
        pair = account.login()
        probe = Probe(node.url, [claims_of(node, pair["access_token"])], redis_url=redis_url)
        probes.append(probe)
        probe.wait_for(0, "ok")

        revoked_at = revoke_and_time(account, "/auth/logout", access_token=pair["access_token"])

        assert probe.wait_for(0, "revoked") - revoked_at < PROPAGATION_DEADLINE
        assert "Traceback" not in node.logs()


def test_a_revocation_only_redis_carries_reaches_a_subscribed_feed(
    server: RunningServer, redis_url: str, probes: list[Probe]
) -> None:
    """The server here has no Redis, so its HTTP feed never hears of this entry:
    only the subscription can bring it, and garbage on the channel before it must
    not stop the subscriber."""
    account = Account(server, "pushonly@example.com")
    claims = claims_of(server, account.login()["access_token"])
    probe = Probe(server.url, [claims], redis_url=redis_url)
    probes.append(probe)
    probe.wait_for(0, "ok")

    async def publish() -> None:
        client = connect(redis_url)
        bus = RedisEventBus(client, close_client=True)
        await client.publish("gatepass:events", b"{not json")
        await client.publish("gatepass:events", json.dumps({"v": 1, "type": "x"}).encode())
        entry = RevocationEvent(10**9, "jti", claims.jti, 0.0, time.time())
        await bus.publish_revocations([entry], retention=900.0, now=time.time())
        await bus.close()

    # The subscriber connects on its own thread, at its own pace: publish until heard.
    deadline = time.monotonic() + EVENTUALLY
    while probe.state.get(0) != "revoked":
        assert time.monotonic() < deadline, probe.history
        asyncio.run(publish())
        with contextlib.suppress(AssertionError):
            probe.wait_for(0, "revoked", timeout=0.5)
    assert probe.outcomes(0) == ["stale", "ok", "revoked"]


def test_a_forked_child_follows_the_feed_on_its_own_thread(server: RunningServer) -> None:
    """gunicorn forks workers after the app (and its feed) was built: the parent's
    poller does not come along, so a child that did not start its own would judge
    on what the parent knew at the fork, until it went stale."""
    account = Account(server, "forked@example.com")
    pair = account.login()
    claims = claims_of(server, pair["access_token"])
    with RevocationFeed(server.url, token=FEED_TOKEN, max_staleness=6.0) as feed:
        assert feed.wait_until_ready(EVENTUALLY)
        feed.check(claims)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report what its feed says of the token, then leave
            os.close(read_end)
            outcome = b"timeout"
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    feed.check(claims)
                except InvalidToken:
                    outcome = b"revoked"
                    break
                except RevocationsStale:
                    outcome = b"stale"
                    break
                time.sleep(0.005)
            os.write(write_end, outcome)
            os._exit(0)
        os.close(write_end)
        try:
            revoke_and_time(account, "/auth/logout", access_token=pair["access_token"])
            with os.fdopen(read_end, "rb") as report:
                outcome = report.read()
        finally:
            os.waitpid(child, 0)
    assert outcome == b"revoked"


def test_the_feed_client_loads_none_of_the_server_stack() -> None:
    heavy = ("sqlalchemy", "pydantic", "argon2", "starlette", "jinja2", "prometheus_client")
    script = (
        "import sys, gatepass.verifier.revocations\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
