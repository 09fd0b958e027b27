"""A Django project under a real gunicorn, started on a free loopback port and
always stopped by its PID. Every wait has a deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e_support import free_port, server_env, stop_process

SERVE_TIMEOUT = 30.0


@contextmanager
def gunicorn(
    chdir: Path,
    app: str,
    log: Path,
    env: Mapping[str, str],
    *,
    probe: str,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Serve ``app`` from ``chdir``; yield its URL once ``probe`` answers at all.

    ``env`` may name the URL the server will have as ``{url}``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = server_env({k: v.replace("{url}", url) for k, v in env.items()})
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *args, app]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=chdir,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log.read_text()}")
            try:
                httpx.get(f"{url}{probe}", timeout=2.0)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn did not answer {url}{probe}")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(process)
