"""The ``gatepass`` command line."""

from __future__ import annotations

import asyncio
import copy
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from gatepass.config import Settings, load_settings
from gatepass.errors import ConfigError, StoreError
from gatepass.keys import KeyRing, retired_key_retention
from gatepass.stores import migrations
from gatepass.stores.factory import database_from_settings, store_from_settings
from gatepass.stores.redis_connection import check_redis_url
from gatepass.stores.sql import SqlStore


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
    from gatepass.server.protocol import ConnectionLimits, protocol_factory, raise_fd_limit

    settings = _settings(host=host, port=port)
    try:
        if settings.redis_url:
            check_redis_url(settings.redis_url)
    except ConfigError as exc:
        _fail(str(exc))
    # Reach the database and bring (or check) its schema up to date here, where a
    # failure is one line; inside uvicorn's start-up it would be a traceback.
    _run(_start_store(settings))
    click.echo(f"gatepass serving on http://{settings.host}:{settings.port}", err=True)
    raise_fd_limit(settings.max_connections)
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
    )
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        # httptools with a cap and a deadline on request heads and a cap on
        # connections; uvicorn's own protocols have none of them.
        "http": protocol_factory(limits),
        # Client addresses come from GATEPASS_TRUSTED_PROXIES only, not from uvicorn.
        "proxy_headers": False,
        "server_header": False,
        "log_level": log_level,
        # Above info the access log is filtered anyway; not building it saves time.
        "access_log": log_level.lower() in ("trace", "debug", "info"),
        "log_config": _log_config(log_level),
    }
    if workers == 1:
        app = create_app(settings)
        # Everything imported and built so far lives as long as the process: keep it
        # out of the cyclic collector's way, so full collections stay short.
        gc.collect()
        gc.freeze()
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    os.environ["GATEPASS_HOST"] = settings.host
    os.environ["GATEPASS_PORT"] = str(settings.port)
    uvicorn.run(
        "gatepass.server.app:create_app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )


def _log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging (its access log without query strings), plus gatepass's own
    loggers (``gatepass``, ``gatepass.audit``, ``gatepass.mail``) on the same stderr
    handler at the same level: operators see the audit trail and where mail went
    without configuring anything."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    level = log_level.upper() if log_level.lower() != "trace" else "DEBUG"
    config["loggers"]["gatepass"] = {"handlers": ["default"], "level": level, "propagate": False}
    # Mail links carry their token in the query string: never into the access log.
    config.setdefault("filters", {})["drop_query"] = {
        "()": "gatepass.server.access_log.DropQueryStrings"
    }
    config["handlers"]["access"].setdefault("filters", []).append("drop_query")
    return config


@main.group()
def keys() -> None:
    """Inspect and rotate the access-token signing keys."""


async def _start_store(settings: Settings) -> None:
    """Connect and make the schema current (or refuse a stale one), then let go."""
    store = store_from_settings(settings)
    try:
        await store.start()
    finally:
        await store.close()


async def _with_store(action: Callable[[SqlStore, Settings], Awaitable[None]]) -> None:
    """Run ``action`` on the deployment's store alone: no keys or secrets are created."""
    settings = _settings()
    store = database_from_settings(settings)
    try:
        await store.start()
        await action(store, settings)
    finally:
        await store.close()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@keys.command("list")
def keys_list() -> None:
    """List signing keys: kid, algorithm, state, created, retired."""

    async def show(store: SqlStore, settings: Settings) -> None:
        for record in await store.list_signing_keys():
            click.echo(
                f"{record.kid}  {record.alg:<5}  {record.state:<7}  "
                f"created {_when(record.created_at)}  retired {_when(record.retired_at)}"
            )

    _run(_with_store(show))


@keys.command("rotate")
def keys_rotate() -> None:
    """Retire the signing key, promote the published next key, publish a new next key.

    The new key has the algorithm of the current one (so a shell whose
    GATEPASS_JWT_ALGORITHM differs from the servers' cannot switch it); with no
    key yet, GATEPASS_JWT_ALGORITHM decides. Running servers start signing with
    the new key within KEY_RELOAD_SECONDS (30 s); tokens signed by the retired
    key verify until they expire.
    """

    async def rotate(store: SqlStore, settings: Settings) -> None:
        current = [k for k in await store.list_signing_keys() if k.state == "current"]
        algorithm = current[-1].alg if current else settings.jwt_algorithm
        retention = retired_key_retention(settings.access_token_ttl, settings.leeway)
        ring = KeyRing(store, algorithm, retention, time.time)
        key = await ring.rotate()
        click.echo(f"signing key is now {key.kid} ({key.alg})")

    _run(_with_store(rotate))


@main.group()
def db() -> None:
    """Inspect and migrate the database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the schema to the newest revision (safe to run again, and while
    servers start). Rows a migration had to leave as they were are listed."""

    async def upgrade() -> None:
        store = database_from_settings(_settings())
        try:
            result = await store.upgrade()
        finally:
            await store.close()
        for notice in result.notices:
            click.echo(f"left unchanged: {notice}")
        if result.changed:
            click.echo(f"database upgraded from {result.before or 'none'} to {result.after}")
        else:
            click.echo(f"database is at {result.after}, the newest revision")

    _run(upgrade())


@db.command("current")
def db_current() -> None:
    """Print the schema revision of the database (without changing it)."""

    async def current() -> None:
        store = database_from_settings(_settings())
        try:
            revision = await store.current_revision()
        finally:
            await store.close()
        if revision == migrations.HEAD:
            click.echo(f"{revision} (newest)")
        else:
            click.echo(
                f"{revision or 'none'} (newest is {migrations.HEAD}: run gatepass db upgrade)"
            )

    _run(current())


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(coro)
    except (StoreError, ConfigError) as exc:
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
