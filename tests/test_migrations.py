"""Schema migrations: the shipped Alembic history, the start-up upgrade of old
databases (re-keying addresses without merging accounts), and ``gatepass db``."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from gatepass.cli import main
from gatepass.errors import StoreUnavailable
from gatepass.stores import migrations
from gatepass.stores.sql import SqlStore, metadata

OLD_SCHEMA = Path(__file__).parent / "data" / "schema_f47fc1e_sqlite.sql"

#: Users of a database made before migrations: (id, stored email, created_at).
OLD_USERS = [
    ("u-victim", "victim@example.com", 1.0),
    # Registered as a second account under a full-width spelling of the same mailbox.
    ("u-twin", "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", 2.0),
    ("u-idn", "bob@b\u00fccher.de", 3.0),
    # Over 64 octets before the @: accepted then, invalid now.
    ("u-long", "v" * 70 + "@example.com", 4.0),
    # Neither holds the normal form; the older moves to it, the younger collides.
    ("u-carol-1", "carol@\uff45xample.com", 5.0),
    ("u-carol-2", "\uff43arol@example.com", 6.0),
    ("u-plain", "dave@example.com", 7.0),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def make_old_database(path: Path) -> None:
    """A database as ``metadata.create_all`` made it at f47fc1e, with users and a session."""
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA.read_text())
        conn.executemany(
            "INSERT INTO gatepass_users VALUES (?, ?, 'hash', 'user', ?, 0.0)", OLD_USERS
        )
        conn.execute(
            "INSERT INTO gatepass_sessions VALUES "
            "('idhash', 'handle', 'u-twin', 'csrf', 1.0, 1.0, NULL, NULL)"
        )
    conn.close()


def migrate_with_full_history(path: Path, revision: str = "head") -> None:
    """Every revision in turn, as ``alembic upgrade`` runs them (no shortcut)."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), revision)
    engine.dispose()


def schema_of(path: Path) -> dict[str, Any]:
    """Everything the database reflects about its tables, in comparable form."""
    engine = create_engine(f"sqlite:///{path}")
    inspector = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    tuple(sorted(fk["options"].items())),
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
    engine.dispose()
    return schema


def diffs_from_metadata(path: Path) -> list[Any]:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diffs = compare_metadata(context, metadata)
    engine.dispose()
    return list(diffs)


def emails(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, email FROM gatepass_users").fetchall()
    conn.close()
    return dict(rows)


def revision_of(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    conn.close()
    return [r[0] for r in rows]


# --- the history --------------------------------------------------------------------


def test_head_constant_is_the_head_of_the_shipped_history(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        script = ScriptDirectory.from_config(migrations.alembic_config(conn))
    engine.dispose()
    assert script.get_heads() == [migrations.HEAD]
    assert [r.revision for r in script.walk_revisions()] == [
        "0008",
        "0007",
        "0006",
        "0005",
        "0004",
        "0003",
        "0002",
        "0001",
    ]


def test_baseline_revision_is_exactly_the_schema_made_before_migrations(tmp_path: Path) -> None:
    old, baseline = tmp_path / "old.db", tmp_path / "baseline.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(OLD_SCHEMA.read_text())
    conn.close()
    migrate_with_full_history(baseline, migrations.BASELINE)
    migrated = schema_of(baseline)
    assert migrated.pop(migrations.VERSION_TABLE)
    assert migrated == schema_of(old)
    assert set(migrated) == migrations.BASELINE_TABLES


def test_migrated_schema_equals_metadata(tmp_path: Path) -> None:
    path = tmp_path / "migrated.db"
    migrate_with_full_history(path)
    assert diffs_from_metadata(path) == []
    assert revision_of(path) == [migrations.HEAD]


@pytest.mark.anyio
async def test_new_database_gets_the_schema_the_history_makes(tmp_path: Path) -> None:
    # A new database skips the history (create_all + stamp): it must end up the same.
    migrated, fresh = tmp_path / "migrated.db", tmp_path / "fresh.db"
    migrate_with_full_history(migrated)
    store = SqlStore(url(fresh))
    await store.start()
    assert await store.current_revision() == migrations.HEAD
    await store.close()
    assert schema_of(fresh) == schema_of(migrated)
    assert diffs_from_metadata(fresh) == []
    assert revision_of(fresh) == revision_of(migrated) == [migrations.HEAD]


# --- upgrading a database made before migrations ------------------------------------


@pytest.mark.anyio
async def test_old_database_is_rekeyed_and_collisions_are_reported_not_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    make_old_database(path)
    store = SqlStore(url(path))
    with caplog.at_level(logging.WARNING, logger="gatepass.migrations"):
        await store.start()
    assert await store.current_revision() == migrations.HEAD
    twin = await store.get_user("u-twin")
    await store.close()

    assert emails(path) == {
        "u-victim": "victim@example.com",
        # Its normal form is u-victim's address: kept as stored, not merged.
        "u-twin": "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
        "u-idn": "bob@xn--bcher-kva.de",
        "u-long": "v" * 70 + "@example.com",
        "u-carol-1": "carol@example.com",
        "u-carol-2": "\uff43arol@example.com",
        "u-plain": "dave@example.com",
    }
    # Nothing of the colliding account was lost: the row and its session remain.
    assert twin is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT user_id FROM gatepass_sessions").fetchall() == [("u-twin",)]
        assert conn.execute(
            "SELECT DISTINCT credential_version FROM gatepass_users"
        ).fetchall() == [(0,)]
    conn.close()

    warnings = {r.getMessage() for r in caplog.records if r.name == "gatepass.migrations"}
    assert len(warnings) == 3
    assert any("user u-twin" in w and "address of user u-victim" in w for w in warnings)
    assert any("user u-carol-2" in w and "address of user u-carol-1" in w for w in warnings)
    assert any("user u-long" in w and "64 octets" in w for w in warnings)
    assert all(
        r.levelno == logging.WARNING for r in caplog.records if r.name == "gatepass.migrations"
    )
    # The report names users by id, never by address.
    for warning in warnings:
        assert not any(stored.split("@")[1] in warning for _, stored, _ in OLD_USERS)


@pytest.mark.anyio
async def test_rekeyed_user_signs_in_with_any_spelling(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_database(path)
    store = SqlStore(url(path))
    await store.start()
    found = await store.get_user_by_email("bob@xn--bcher-kva.de")
    await store.close()
    assert found is not None
    assert found.id == "u-idn"


@pytest.mark.anyio
async def test_upgraded_database_keeps_foreign_keys_enforced(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_database(path)
    store = SqlStore(url(path))
    await store.start()
    async with store.engine.connect() as conn:
        enforced = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    await store.close()
    assert enforced == 1


@pytest.mark.anyio
async def test_database_of_an_unknown_newer_revision_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    migrate_with_full_history(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    store = SqlStore(url(path))
    with pytest.raises(StoreUnavailable, match="cannot be upgraded"):
        await store.start()
    await store.close()
    assert revision_of(path) == ["9999"]


@pytest.mark.anyio
async def test_database_with_only_some_gatepass_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE gatepass_users (id VARCHAR(36) PRIMARY KEY)")
    conn.close()
    store = SqlStore(url(path))
    with pytest.raises(StoreUnavailable, match="no schema version"):
        await store.start()
    await store.close()


_START = """
import asyncio, sys, time
from gatepass.stores.sql import SqlStore

async def main() -> None:
    store = SqlStore(sys.argv[1])
    while time.time() < float(sys.argv[2]):
        time.sleep(0.001)
    await store.start()
    await store.close()

asyncio.run(main())
"""


def test_two_processes_starting_at_once_both_start_and_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_database(path)
    go = str(time.time() + 2.0)  # both are past their imports by then
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _START, url(path), go],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=60)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    # One of them migrated (and reported the three rows); the other found it done.
    assert sum(e.count("migration left a row unchanged") for e in errors) == 3
    assert revision_of(path) == [migrations.HEAD]
    assert emails(path)["u-idn"] == "bob@xn--bcher-kva.de"


# --- gatepass db ---------------------------------------------------------------------


def run_cli(path: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(main, ["db", *args], env={"GATEPASS_DATABASE_URL": url(path)})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_db_upgrade_reports_collisions_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_database(path)
    assert run_cli(path, "current") == ["none (newest is 0008: run gatepass db upgrade)"]

    first = run_cli(path, "upgrade")
    assert first[-1] == "database upgraded from none to 0008"
    left = first[:-1]
    assert len(left) == 3
    assert all(line.startswith("left unchanged: user u-") for line in left)
    assert any("u-twin" in line and "u-victim" in line for line in left)
    after_first = (schema_of(path), emails(path), revision_of(path))

    assert run_cli(path, "upgrade") == ["database is at 0008, the newest revision"]
    assert (schema_of(path), emails(path), revision_of(path)) == after_first
    assert run_cli(path, "current") == ["0008 (newest)"]


def test_db_upgrade_of_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    assert run_cli(path, "upgrade") == ["database upgraded from none to 0008"]
    assert run_cli(path, "upgrade") == ["database is at 0008, the newest revision"]
    assert diffs_from_metadata(path) == []
