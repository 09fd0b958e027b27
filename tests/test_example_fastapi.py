"""examples/fastapi_app runs as written: a real uvicorn process serving it, signed
into through its /api/auth routes, its protected and admin-only routes checked."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e_support import free_port, server_env, stop_process

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = {"email": "ada@example.com", "password": "correct horse battery"}
STARTUP_TIMEOUT = 30.0

pytestmark = pytest.mark.e2e


@pytest.fixture
def example_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env({"GATEPASS_DEV": "1", "GATEPASS_PUBLIC_URL": url, "PYTHONPATH": str(ROOT)})
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port", str(port)]
    with (tmp_path / "uvicorn.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert process.poll() is None, (tmp_path / "uvicorn.log").read_text()
                try:
                    if client.get(f"{url}/api/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the example did not start"
                time.sleep(0.05)
        yield url
    finally:
        stop_process(process)


def _grant_admin(tmp_path: Path, email: str) -> None:
    # No gatepass command manages roles yet: the grant is a row in the store.
    with sqlite3.connect(tmp_path / ".gatepass" / "gatepass.db") as conn:
        conn.execute("UPDATE gatepass_users SET roles = 'user admin' WHERE email = ?", (email,))


def test_example_signs_in_and_guards_its_routes(example_url: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=example_url, timeout=10.0) as client:
        assert client.get("/notes").status_code == 401
        assert client.post("/api/auth/register", json=ACCOUNT).status_code == 201
        tokens = client.post("/api/auth/login", json={**ACCOUNT, "client": "api"}).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        notes = client.get("/notes", headers=auth)
        assert notes.status_code == 200
        assert notes.json()["method"] == "bearer"
        refused = client.get("/admin/stats", headers=auth)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")

        assert client.post("/api/auth/login", json=ACCOUNT).status_code == 200
        assert client.get("/notes").json()["method"] == "session"  # the dev cookie
        assert client.get("/admin/stats").status_code == 403

        _grant_admin(tmp_path, ACCOUNT["email"])
        client.cookies.clear()
        assert client.post("/api/auth/login", json=ACCOUNT).status_code == 200
        granted = client.get("/admin/stats")
        assert granted.status_code == 200
        assert granted.json()["asked_by"] == ACCOUNT["email"]
