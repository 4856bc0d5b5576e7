"""Shared fixtures: a real PostgreSQL, one fresh database per test.

Server choice: ``$SWITCHD_TEST_DSN`` when set, else 127.0.0.1:5432 when it
answers, else an embedded cluster under a temporary directory. The schema is
migrated once into a template database; each test gets a copy
(``CREATE DATABASE ... TEMPLATE``) with a unique name, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedPostgres

# The daemon fixtures and helpers (tests/fixtures_daemon.py): importable by test modules
# as ``fixtures_daemon`` because this directory is on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_daemon import daemon_db, start_daemon, with_database  # noqa: E402,F401

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    # A compiled module older than its source would test yesterday's code (setup.py, switch.compiled).
    from switch import compiled

    stale = compiled.stale()
    if stale:
        pytest.exit(f"compiled before their last edit: {', '.join(stale)}: run `make venv` "
                    "(or `SWITCHD_PURE=1 make venv` to run interpreted)", returncode=4)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    env = os.environ.get("SWITCHD_TEST_DSN")
    if env:
        yield env
        return
    if _answers("127.0.0.1", 5432):
        yield LOCAL_DSN
        return
    state = Path(tempfile.mkdtemp(prefix="swd", dir="/tmp"))
    emb = EmbeddedPostgres(state, port=5440 + os.getpid() % 1000)
    try:
        emb.start()
        yield with_database(emb.dsn(), "postgres")
    finally:
        try:
            emb.stop()  # also after a failed start; a cluster that is not running is fine
        finally:
            shutil.rmtree(state, ignore_errors=True)


async def _admin(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    name = f"switchd_tpl_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await _admin(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        c2 = await ledger_db.connect(with_database(admin_dsn, name))
        try:
            await migrate.upgrade(c2)
        finally:
            await c2.close()

    asyncio.run(create())
    try:
        yield name
    finally:
        asyncio.run(drop_database(admin_dsn, name))


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await _admin(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_from_template(admin_dsn: str, template: str) -> str:
    name = f"switchd_t_{uuid.uuid4().hex[:12]}"
    conn = await _admin(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


# Sync fixtures (each runs its own short event loop) so that sync tests, such
# as hypothesis state machines, can use them as well as async tests.
@pytest.fixture
def db_dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh, migrated database, dropped after the test."""
    name = asyncio.run(create_from_template(admin_dsn, template_db))
    try:
        yield with_database(admin_dsn, name)
    finally:
        asyncio.run(drop_database(admin_dsn, name))


async def _create_empty(admin_dsn: str, name: str) -> None:
    conn = await _admin(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture
def empty_db_dsn(admin_dsn: str) -> Iterator[str]:
    """DSN of a fresh database with no schema at all."""
    name = f"switchd_e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_empty(admin_dsn, name))
    try:
        yield with_database(admin_dsn, name)
    finally:
        asyncio.run(drop_database(admin_dsn, name))


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await ledger_db.create_pool(db_dsn, 1, 6)
    try:
        yield p
    finally:
        await p.close()
