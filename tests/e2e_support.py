"""Run the real ``gatepass serve`` process for end-to-end tests.

:func:`running_server` starts the console script on a free loopback port in a
given working directory, with an environment built from ``os.environ`` minus every
``GATEPASS_*`` variable (the developer's own settings never leak in) plus the
test's own, waits for ``/healthz``, and always stops the process by its PID:
SIGTERM, then SIGKILL after a bounded wait. Its stdout and stderr go to files so a
test can read the server's logs. Every wait here has a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import on_ci

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: A bad setting must stop ``gatepass serve`` well within this.
BAD_CONFIG_TIMEOUT = 20.0
_POLL_INTERVAL = 0.05
_PORT_ATTEMPTS = 3


def unavailable(reason: str) -> None:
    """A missing tool fails the run on CI and skips it on a developer's machine."""
    if on_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def gatepass_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m gatepass``."""
    script = shutil.which("gatepass", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script]
    return [sys.executable, "-m", "gatepass"]


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without any ``GATEPASS_*`` variable, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEPASS_")}
    clean.update(env or {})
    return clean


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """Stop one process by its PID: SIGTERM, then SIGKILL if it outlives ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=timeout)


@dataclass
class RunningServer:
    """A live ``gatepass serve`` process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        """Everything the process wrote so far, stdout then stderr."""
        return read_text(self.stdout_path) + read_text(self.stderr_path)

    def stop(self) -> int:
        """Stop the server (idempotent) and return its exit code."""
        return stop_process(self.process)


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _wait_healthy(process: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """Poll ``/healthz`` until it answers 200; ``False`` if the process exited first."""
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(_POLL_INTERVAL)
    raise TimeoutError(f"gatepass serve did not answer {url}/healthz in {STARTUP_TIMEOUT} s")


def _with_public_url(env: Mapping[str, str] | None, url: str) -> dict[str, str]:
    configured = dict(env or {})
    if not {"GATEPASS_PUBLIC_URL", "GATEPASS_ISSUER"} & {k.upper() for k in configured}:
        configured["GATEPASS_PUBLIC_URL"] = url
    return configured


@contextmanager
def running_server(
    cwd: Path,
    env: Mapping[str, str] | None = None,
    *,
    log_dir: Path | None = None,
    args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT,
    port: int | None = None,
) -> Iterator[RunningServer]:
    """Start ``gatepass serve`` in ``cwd`` on a free port (or on ``port``, e.g. to
    start a server again where its clients expect it); yield it once ``/healthz``
    is 200.

    The server's own origin comes from configuration, never from ``Host``: unless
    ``env`` names a public URL or an issuer, ``GATEPASS_PUBLIC_URL`` is the URL the
    tests use (``http://127.0.0.1:PORT``). Logs land in ``log_dir`` (default ``cwd``)
    as ``gatepass-<port>.out`` / ``.err``. The process is stopped on exit, whatever
    happened inside the block.
    """
    log_dir = log_dir or cwd
    log_dir.mkdir(parents=True, exist_ok=True)
    command = gatepass_command()
    last_error = ""
    fixed_port = port
    for _ in range(_PORT_ATTEMPTS if fixed_port is None else 1):
        port = free_port() if fixed_port is None else fixed_port
        url = f"http://127.0.0.1:{port}"
        stdout_path = log_dir / f"gatepass-{port}.out"
        stderr_path = log_dir / f"gatepass-{port}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                [*command, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                cwd=cwd,
                env=server_env(_with_public_url(env, url)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        server = RunningServer(url, port, process, stdout_path, stderr_path)
        try:
            healthy = _wait_healthy(process, url, time.monotonic() + startup_timeout)
        except BaseException:
            server.stop()
            raise
        if healthy:
            try:
                yield server
            finally:
                server.stop()
            return
        server.stop()
        last_error = read_text(stderr_path)
        if "address already in use" not in last_error.lower():
            break  # not a lost race for the port: retrying would not help
    raise RuntimeError(f"gatepass serve exited during start-up:\n{last_error}")


def run_serve_expecting_exit(
    cwd: Path, env: Mapping[str, str], timeout: float = BAD_CONFIG_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``gatepass serve`` that is expected to stop on its own (e.g. a bad setting).

    Fails the test if it is still running after ``timeout``; it is killed then.
    """
    command = [*gatepass_command(), "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"gatepass serve with {dict(env)} was still running after {timeout} s: {exc}")
