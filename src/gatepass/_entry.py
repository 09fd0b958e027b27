"""The ``gatepass`` command's entry point, importable on a verifier-only install."""

from __future__ import annotations

import sys

SERVER_EXTRA_HINT = "the gatepass command needs the server extra: pip install 'gatepass[server]'"


def main() -> None:
    try:
        from gatepass.cli import main as cli_main
    except ModuleNotFoundError as exc:  # e.g. click or SQLAlchemy missing
        print(f"{SERVER_EXTRA_HINT} ({exc.name} is not installed)", file=sys.stderr)
        raise SystemExit(2) from None
    cli_main()
