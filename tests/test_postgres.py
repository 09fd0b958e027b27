"""gatepass on a real PostgreSQL (tests/servers.py starts one per session): the
migration history, ``gatepass db``, start-up refusals as one line, and the
attacks whose answer depends on the backend.

Store behaviour shared with SQLite is tested by the store-level modules on both
backends (``database_url``): test_sessions, test_code_review, test_login_races.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, inspect, make_url, text, update
from starlette.testclient import TestClient

from gatepass.cli import main
from gatepass.config import Settings
from gatepass.errors import ConfigError, StoreUnavailable
from gatepass.stores import migrations
from gatepass.stores.base import FamilyRecord, RotationStatus, SessionLimit
from gatepass.stores.sql import (
    PG_POOL_SIZE,
    SqlStore,
    _driver_errors_mapped,
    async_database_url,
    families,
    metadata,
)
from tests.conftest import PASSWORD, login, register
from tests.e2e_support import free_port, gatepass_command, running_server, server_env
from tests.servers import SUPERUSER, PostgresServer
from tests.test_migrations import OLD_USERS

LIMIT = SessionLimit(max_per_user=100, idle_timeout=100, absolute_timeout=1000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def migrate(url: str, revision: str) -> None:
    """Run the shipped history up to ``revision``, every step, as ``alembic upgrade``."""
    store = SqlStore(url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(
                lambda sync: command.upgrade(migrations.alembic_config(sync), revision)
            )
    finally:
        await store.close()


async def on(url: str, read: Callable[[Connection], Any]) -> Any:
    store = SqlStore(url)
    try:
        async with store.engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await store.close()


def schema(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    return {
        table: {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    fk["options"].get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
        }
        for table in sorted(inspector.get_table_names())
    }


def diffs(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def revision(conn: Connection) -> str | None:
    return migrations.current_revision(conn)


def emails(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(text("SELECT id, email FROM gatepass_users")).all())


async def old_database(url: str) -> None:
    """A database at revision 0001 (the schema before 0002) holding OLD_USERS."""
    await migrate(url, migrations.BASELINE)
    store = SqlStore(url)
    try:
        async with store.engine.begin() as conn:
            for user_id, email, created_at in OLD_USERS:
                await conn.execute(
                    text(
                        "INSERT INTO gatepass_users VALUES "
                        "(:id, :email, 'hash', 'user', :created_at, 0.0)"
                    ),
                    {"id": user_id, "email": email, "created_at": created_at},
                )
    finally:
        await store.close()


# --- the migration history on PostgreSQL --------------------------------------------


@pytest.mark.anyio
async def test_full_history_on_postgresql_makes_exactly_the_metadata_schema(
    pg_empty_url: str,
) -> None:
    await migrate(pg_empty_url, "head")
    assert await on(pg_empty_url, diffs) == []
    assert await on(pg_empty_url, revision) == migrations.HEAD


@pytest.mark.anyio
async def test_new_postgresql_database_gets_the_schema_the_history_makes(
    postgres_server: PostgresServer, pg_empty_url: str
) -> None:
    # A new database skips the history (create_all + stamp): it must end up the same.
    await postgres_server.admin_async("CREATE DATABASE history_twin TEMPLATE template0")
    twin = postgres_server.url("history_twin")
    await migrate(twin, "head")
    store = SqlStore(pg_empty_url, auto_upgrade=True)
    await store.start()
    await store.close()
    assert await on(pg_empty_url, schema) == await on(twin, schema)
    assert await on(pg_empty_url, diffs) == []


def test_postgresql_at_0001_is_rekeyed_and_collisions_are_reported_not_merged(
    pg_empty_url: str,
) -> None:
    asyncio.run(old_database(pg_empty_url))
    runner = CliRunner()
    env = {"GATEPASS_DATABASE_URL": pg_empty_url}
    assert runner.invoke(main, ["db", "current"], env=env).stdout.splitlines() == [
        "0001 (newest is 0008: run gatepass db upgrade)"
    ]
    result = runner.invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "database upgraded from 0001 to 0008"
    left = lines[:-1]
    assert len(left) == 3
    assert any("u-twin" in line and "address of user u-victim" in line for line in left)
    assert any("u-carol-2" in line and "address of user u-carol-1" in line for line in left)
    assert any("u-long" in line and "64 octets" in line for line in left)

    stored = asyncio.run(on(pg_empty_url, emails))
    assert stored["u-twin"] == "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"
    assert stored["u-idn"] == "bob@xn--bcher-kva.de"
    assert stored["u-carol-1"] == "carol@example.com"
    assert len(stored) == len(OLD_USERS)  # nothing merged, nothing dropped
    again = runner.invoke(main, ["db", "upgrade"], env=env)
    assert again.stdout.splitlines() == ["database is at 0008, the newest revision"]
    assert runner.invoke(main, ["db", "current"], env=env).stdout.splitlines() == ["0008 (newest)"]


_UPGRADE_AT = """
import sys, time
from gatepass.cli import main
from gatepass.config import Settings

while time.time() < float(sys.argv[1]):
    time.sleep(0.001)
main(["db", "upgrade"])
"""


def test_two_db_upgrades_at_once_on_one_postgresql_both_succeed_and_migrate_once(
    pg_empty_url: str,
) -> None:
    asyncio.run(old_database(pg_empty_url))
    go = str(time.time() + 2.0)  # both are past their imports by then
    env = server_env(
        {"GATEPASS_DATABASE_URL": pg_empty_url, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE_AT, go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    stdouts = sorted(out for out, _ in outputs)
    # One migrated (and reported the three rows); the other waited for it, found it done.
    assert stdouts[0].splitlines() == ["database is at 0008, the newest revision"]
    assert stdouts[1].splitlines()[-1] == "database upgraded from 0001 to 0008"
    assert stdouts[1].count("left unchanged: user u-") == 3
    assert asyncio.run(on(pg_empty_url, revision)) == migrations.HEAD


# --- start-up: one line, never a traceback --------------------------------------------


def serve_expecting_exit(cwd: Path, env: dict[str, str], *prefix: str) -> list[str]:
    """``gatepass serve`` that must stop on its own; its stderr lines."""
    command = [*(prefix or gatepass_command()), "serve", "--port", str(free_port())]
    result = subprocess.run(
        command,
        cwd=cwd,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    return result.stderr.strip().splitlines()


@pytest.mark.e2e
@pytest.mark.anyio
async def test_node_on_a_postgresql_schema_behind_refuses_to_start_with_one_line(
    tmp_path: Path, pg_empty_url: str, postgres_server: PostgresServer
) -> None:
    await old_database(pg_empty_url)
    lines = serve_expecting_exit(tmp_path, {"GATEPASS_DATABASE_URL": pg_empty_url})
    assert len(lines) == 1, lines
    assert "0001" in lines[0]
    assert "gatepass db upgrade" in lines[0]
    assert postgres_server.password not in lines[0]
    # It changed nothing: the operator decides when to migrate.
    assert await on(pg_empty_url, revision) == migrations.BASELINE


@pytest.mark.e2e
@pytest.mark.anyio
async def test_node_on_a_postgresql_schema_behind_migrates_with_auto_upgrade_and_serves(
    tmp_path: Path, pg_empty_url: str
) -> None:
    await old_database(pg_empty_url)
    env = {"GATEPASS_DATABASE_URL": pg_empty_url, "GATEPASS_DB_AUTO_UPGRADE": "1"}
    with running_server(tmp_path, env) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            account = {"email": "new@example.com", "password": PASSWORD}
            assert (await http.post("/auth/register", json=account)).status_code == 201
            pair = await http.post("/auth/login", json={**account, "client": "api"})
            assert pair.status_code == 200, pair.text
            me = await http.get(
                "/auth/me", headers={"Authorization": f"Bearer {pair.json()['access_token']}"}
            )
            assert me.json()["email"] == "new@example.com"
        assert "migration left a row unchanged" in server.logs()
    assert await on(pg_empty_url, revision) == migrations.HEAD


@pytest.mark.e2e
def test_unreachable_postgresql_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    url = f"postgresql://gatepass:s3cret-pw@127.0.0.1:{free_port()}/gatepass"
    lines = serve_expecting_exit(tmp_path, {"GATEPASS_DATABASE_URL": url})
    assert len(lines) == 1, lines
    assert "database unreachable" in lines[0]
    assert "s3cret-pw" not in lines[0]


@pytest.mark.e2e
def test_wrong_postgresql_password_is_one_line_that_does_not_echo_it(
    tmp_path: Path, postgres_server: PostgresServer, pg_url: str
) -> None:
    url = pg_url.replace(postgres_server.password, "not-the-password")
    lines = serve_expecting_exit(tmp_path, {"GATEPASS_DATABASE_URL": url})
    assert len(lines) == 1, lines
    assert "password authentication failed" in lines[0]
    assert "not-the-password" not in lines[0]


@pytest.mark.e2e
def test_missing_postgresql_driver_is_a_one_line_start_up_error(
    tmp_path: Path, pg_url: str
) -> None:
    # An interpreter where asyncpg cannot be imported, as on an install without it.
    no_driver = [
        sys.executable,
        "-c",
        "import sys; sys.modules['asyncpg'] = None; from gatepass.cli import main; main()",
    ]
    lines = serve_expecting_exit(tmp_path, {"GATEPASS_DATABASE_URL": pg_url}, *no_driver)
    assert len(lines) == 1, lines
    assert "GATEPASS_DATABASE_URL" in lines[0]
    assert "pip install asyncpg" in lines[0]


def test_db_auto_upgrade_is_off_by_default_and_a_bad_value_is_one_line_naming_it(
    make_settings: Callable[..., Settings],
) -> None:
    assert make_settings().db_auto_upgrade is False
    assert make_settings(db_auto_upgrade="1").db_auto_upgrade is True
    with pytest.raises(ConfigError) as caught:
        make_settings(db_auto_upgrade="maybe")
    assert caught.value.setting == "GATEPASS_DB_AUTO_UPGRADE"
    assert "\n" not in str(caught.value)


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("driver", ["postgresql", "postgresql+asyncpg"])
async def test_both_postgresql_url_spellings_reach_the_server_through_asyncpg(
    postgres_server: PostgresServer, pg_url: str, driver: str
) -> None:
    url = pg_url.replace("postgresql://", f"{driver}://", 1)
    store = SqlStore(url)
    try:
        await store.start()
        await store.ping()
        assert store.engine.dialect.driver == "asyncpg"
    finally:
        await store.close()
    assert postgres_server.password not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://u:p@127.0.0.1/db",
        "mysql://u:p@127.0.0.1/db",
        "sqlite+pysqlite:///x.db",
        "not a url",
    ],
)
def test_unsupported_database_url_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        async_database_url(url)
    assert caught.value.setting == "GATEPASS_DATABASE_URL"
    assert ":p@" not in str(caught.value)


def test_plain_sqlite_url_uses_the_async_driver() -> None:
    assert async_database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"


# --- behaviour that depends on the backend -------------------------------------------


@pytest.mark.anyio
async def test_concurrent_rotations_of_one_refresh_token_yield_exactly_one_winner(
    database_url: str,
) -> None:
    store = SqlStore(database_url)
    await store.start()
    try:
        user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), 1.0)
        family = FamilyRecord("fam", user.id, 1.0, 1.0, 10_000.0, None, None)
        await store.create_family(family, "old", credential_version=0, limit=LIMIT)
        outcomes = await asyncio.gather(
            *(store.rotate_refresh_token("old", f"new-{n}", 2.0) for n in range(10))
        )
    finally:
        await store.close()
    statuses = [o.status for o in outcomes]
    assert statuses.count(RotationStatus.ROTATED) == 1, statuses
    # The losers presented a rotated token: reuse, which revokes the family (those
    # that read it after that are simply refused).
    assert RotationStatus.REUSED in statuses
    assert set(statuses) <= {RotationStatus.ROTATED, RotationStatus.REUSED, RotationStatus.INVALID}


async def _backends(server: PostgresServer, database: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(
        host=str(server.socket_dir), port=server.port, user=SUPERUSER, database="postgres"
    )
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await conn.close()
    return int(count)


@pytest.mark.anyio
async def test_start_opens_the_whole_pool_so_the_first_burst_does_not_connect(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    store = SqlStore(pg_url)
    await store.start()
    try:
        assert await _backends(postgres_server, make_url(pg_url).database or "") == PG_POOL_SIZE
    finally:
        await store.close()


@pytest.mark.anyio
async def test_rotations_recover_after_the_database_closed_every_pooled_connection(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    store = SqlStore(pg_url)
    await store.start()
    try:
        user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), 1.0)
        family = FamilyRecord("fam", user.id, 1.0, 1.0, 10_000.0, None, None)
        await store.create_family(family, "old", credential_version=0, limit=LIMIT)
        await postgres_server.admin_async(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{make_url(pg_url).database}'"
        )
        failures = 0
        for _ in range(PG_POOL_SIZE + 1):
            try:
                outcome = await store.rotate_refresh_token("old", "new", 2.0)
                break
            except StoreUnavailable:
                failures += 1  # a closed connection, replaced for the next one
        else:
            pytest.fail("every rotation failed: closed connections went back to the pool")
    finally:
        await store.close()
    assert outcome.status is RotationStatus.ROTATED
    assert failures <= PG_POOL_SIZE


@pytest.fixture
def db_client(make_client: Callable[..., TestClient], database_url: str) -> TestClient:
    return make_client(database_url=database_url)


def test_nul_byte_in_a_session_handle_is_404_not_a_store_error(db_client: TestClient) -> None:
    register(db_client)
    csrf = login(db_client)
    response = db_client.delete("/auth/sessions/abc%00def", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_nul_byte_in_user_agent_cannot_make_sign_in_fail(db_client: TestClient) -> None:
    register(db_client)
    for client_kind in ("web", "api"):
        response = db_client.post(
            "/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD, "client": client_kind},
            headers={"User-Agent": "agent\x00tail"},
        )
        assert response.status_code == 200, response.text


def test_nul_byte_in_login_email_is_401_not_a_store_error(db_client: TestClient) -> None:
    register(db_client)
    response = db_client.post(
        "/auth/login", json={"email": "ada\x00@example.com", "password": PASSWORD}
    )
    assert response.status_code == 401


@pytest.mark.anyio
async def test_store_errors_on_postgresql_are_gatepass_errors_without_the_statement(
    pg_url: str,
) -> None:
    store = SqlStore(pg_url)
    await store.start()
    try:
        token = hashlib.sha256(b"secret refresh token").hexdigest()
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE gatepass_refresh_tokens CASCADE"))
        with pytest.raises(StoreUnavailable) as caught:
            await store.rotate_refresh_token(token, "new", 1.0)
    finally:
        await store.close()
    assert "gatepass_refresh_tokens" in str(caught.value)  # the driver's own words
    assert token not in str(caught.value)


@pytest.mark.anyio
async def test_a_value_asyncpg_refuses_to_encode_is_not_quoted_in_the_error(pg_url: str) -> None:
    # asyncpg's own message quotes the value ("invalid input for query argument $1:
    # '<value>'"); a parameter may be a token or a hash.
    store = SqlStore(pg_url)
    token = "a-refresh-token-that-must-not-be-logged"
    try:
        with pytest.raises(StoreUnavailable) as caught, _driver_errors_mapped():
            async with store.engine.connect() as conn:
                await conn.execute(
                    text("SELECT 1 FROM gatepass_users WHERE credential_version = :v"), {"v": token}
                )
    finally:
        await store.close()
    assert token not in str(caught.value)
    assert "query argument" in str(caught.value)


@pytest.mark.anyio
async def test_a_rotation_racing_a_family_revocation_grants_no_pair(pg_url: str) -> None:
    """The rotation reads the family as live, then the revocation commits while the
    rotation waits for the family row: no pair may come out of it. (SQLite
    serialises writers: its rotation never waits inside its transaction.)"""
    store = SqlStore(pg_url)
    await store.start()
    try:
        await _race_rotation_against_revocation(store)
    finally:
        await store.close()


async def _race_rotation_against_revocation(store: SqlStore) -> None:
    user = await store.create_user("ada@example.com", "$argon2id$x", ("user",), 1.0)
    family = FamilyRecord("fam", user.id, 1.0, 1.0, 10_000.0, None, None)
    token = "a" * 64
    await store.create_family(family, token, credential_version=0, limit=LIMIT)
    async with store.engine.connect() as revoker:
        transaction = await revoker.begin()
        await revoker.execute(
            update(families).where(families.c.id == family.id).values(revoked=True)
        )
        rotation = asyncio.ensure_future(store.rotate_refresh_token(token, "e" * 64, 2.0))
        await asyncio.sleep(0.3)  # the rotation now waits for the family row
        assert not rotation.done()
        await transaction.commit()
    outcome = await rotation
    assert outcome.status is not RotationStatus.ROTATED
