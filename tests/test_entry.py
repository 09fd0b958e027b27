"""The ``gatepass`` command on an install without the server extra."""

from __future__ import annotations

import subprocess
import sys

NO_CLICK = (
    "import sys; sys.modules['click'] = None\n"  # as if only gatepass[verifier] were installed
    "from gatepass._entry import main; main()"
)


def test_the_command_names_the_missing_server_extra_instead_of_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_CLICK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pip install 'gatepass[server]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_command_runs_the_cli_when_the_server_extra_is_there() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from gatepass._entry import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "serve" in done.stdout
