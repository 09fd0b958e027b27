"""The ``gatepass`` command line."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from gatepass.config import Settings, load_settings
from gatepass.errors import ConfigError


def _fail(message: str) -> NoReturn:
    click.echo(f"gatepass: {message}", err=True)
    sys.exit(2)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        _fail(str(exc))


@click.group()
@click.version_option(package_name="gatepass")
def main() -> None:
    """gatepass: hybrid authentication server and tools."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (GATEPASS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (GATEPASS_PORT, default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str | None, port: int | None, workers: int, log_level: str) -> None:
    """Run the auth server."""
    import uvicorn

    from gatepass.server.app import create_app

    settings = _settings(host=host, port=port)
    click.echo(f"gatepass serving on http://{settings.host}:{settings.port}", err=True)
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        # Client addresses come from GATEPASS_TRUSTED_PROXIES only, not from uvicorn.
        "proxy_headers": False,
        "server_header": False,
        "log_level": log_level,
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    os.environ["GATEPASS_HOST"] = settings.host
    os.environ["GATEPASS_PORT"] = str(settings.port)
    uvicorn.run(
        "gatepass.server.app:create_app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )


if __name__ == "__main__":  # pragma: no cover
    main()
