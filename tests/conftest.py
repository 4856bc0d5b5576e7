"""Shared fixtures and the test tiers.

Databases: a real PostgreSQL, one fresh database per test. Server choice:
``$SWITCHD_TEST_DSN`` when set, else 127.0.0.1:5432 when it answers, else an
embedded cluster under a temporary directory. The schema is migrated once into
a template database; each test gets a copy (``CREATE DATABASE ... TEMPLATE``)
with a unique name, dropped afterwards (tools/harness.py makes and drops them).

Tiers (markers registered in pyproject.toml; ``make test-unit``, ``make test-fast``):
every test gets exactly one of ``unit``, ``db``, ``e2e``, inferred here so that
test modules need no marks:

- ``e2e``: it uses a daemon fixture (``E2E_FIXTURES``);
- ``db``: else it uses a database fixture (``DB_FIXTURES``, or any fixture built on one);
- ``unit``: else, and every doctest of switch/, ledger/ and specs/.

``model`` comes on top of the base tier for the tests of a module that defines a
hypothesis ``RuleBasedStateMachine`` (today db and e2e ones). An explicit mark on a
test or module (``pytestmark = pytest.mark.e2e``) wins over inference; it is needed
only where a test reaches PostgreSQL or starts a daemon without those fixtures (an
embedded cluster of its own, a daemon per hypothesis example). Checked twice: at
collection (a unit test may not use a database fixture, a db test no daemon fixture)
and at run time (``admin_dsn`` refuses a unit test, ``Daemon.start`` a test not e2e).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from hypothesis.stateful import RuleBasedStateMachine

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedPostgres
from tools import harness

# The daemon fixtures and helpers (tests/fixtures_daemon.py): importable by test modules
# as ``fixtures_daemon`` because this directory is on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_daemon  # noqa: E402
from fixtures_daemon import daemon_db, start_daemon, with_database  # noqa: E402,F401

from ledger.loyalty import card_numbers  # noqa: E402
from switch import logs  # noqa: E402

# One master key for the whole suite: this process (cards issued in-process), the CLI's
# subprocesses (they inherit the environment) and the daemons (tests/fixtures_daemon.py).
os.environ["SWITCHD_MASTER_KEY"] = fixtures_daemon.MASTER_KEY_HEX
card_numbers.set_master_key(bytes.fromhex(fixtures_daemon.MASTER_KEY_HEX))

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class _CurrentStdout:
    """sys.stdout as it is when a line is written (pytest gives each test its own, closed after)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(autouse=True)
def _process_state() -> None:
    """What a test may change for the whole process, as the suite set it, before every test.

    The CLI run in process sets its own master key and binds the log to its own streams, which
    are closed after it; the test files a worker process runs after it (make test runs two, a
    file at a time, in no fixed order) must not inherit either.
    """
    card_numbers.set_master_key(bytes.fromhex(fixtures_daemon.MASTER_KEY_HEX))
    logs.configure("info", stream=_CurrentStdout())

# ---------------------------------------------------------------------- tiers

BASE_TIERS = ("unit", "db", "e2e")
TIERS = (*BASE_TIERS, "model")
# Fixtures that run a live daemon, or exist only for one (a database per module's daemons).
E2E_FIXTURES = frozenset({"start_daemon", "daemon_db"})
# Fixtures that reach PostgreSQL; every database fixture of this file depends on admin_dsn.
DB_FIXTURES = frozenset({"admin_dsn", "template_db", "db_dsn", "empty_db_dsn", "pool"})


def _module_of(item: pytest.Item) -> ModuleType | None:
    if not isinstance(item, pytest.Function):
        return None  # a doctest: unit
    module = item.getparent(pytest.Module)
    return module.obj if module is not None else None


def _has_state_machine(module: ModuleType | None) -> bool:
    return module is not None and any(
        isinstance(v, type) and issubclass(v, RuleBasedStateMachine) and v is not RuleBasedStateMachine
        for v in vars(module).values())


def inferred_tier(fixtures: set[str]) -> str:
    """The base tier of a test that has no explicit one, from its fixtures (the whole closure).

    >>> inferred_tier({"tmp_path"}), inferred_tier({"admin_dsn", "db_dsn"}), inferred_tier({"daemon_db"})
    ('unit', 'db', 'e2e')
    """
    if fixtures & E2E_FIXTURES:
        return "e2e"
    if fixtures & DB_FIXTURES:
        return "db"
    return "unit"


def tier_problem(item: pytest.Item) -> str | None:
    """Why an item's tiers are wrong (after marking), or None."""
    base = [m.name for m in item.iter_markers() if m.name in BASE_TIERS]
    fixtures = set(getattr(item, "fixturenames", ()))
    if len(set(base)) != 1:
        return f"{item.nodeid}: tiers {sorted(set(base))}, want exactly one of {', '.join(BASE_TIERS)}"
    if base[0] == "unit" and fixtures & (DB_FIXTURES | E2E_FIXTURES):
        return f"{item.nodeid}: a unit test uses {sorted(fixtures & (DB_FIXTURES | E2E_FIXTURES))}"
    if base[0] == "db" and fixtures & E2E_FIXTURES:
        return f"{item.nodeid}: a db test uses {sorted(fixtures & E2E_FIXTURES)}"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        if not any(m.name in BASE_TIERS for m in item.iter_markers()):
            item.add_marker(getattr(pytest.mark, inferred_tier(set(getattr(item, "fixturenames", ())))))
        if _has_state_machine(_module_of(item)) and item.get_closest_marker("model") is None:
            item.add_marker(pytest.mark.model)
        problem = tier_problem(item)
        if problem:
            problems.append(problem)
    if problems:
        raise pytest.UsageError("test tiers (tests/conftest.py):\n" + "\n".join(problems))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the item's fixtures: admin_dsn and Daemon.start read it.
    fixtures_daemon.current_tiers = frozenset(m.name for m in item.iter_markers() if m.name in TIERS)


# ---------------------------------------------------------------------- databases


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    if "unit" in fixtures_daemon.current_tiers:
        pytest.fail("a unit test reached for PostgreSQL: mark it db (or e2e)", pytrace=False)
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


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    name = harness.unique_database_name("switchd_tpl")

    async def create() -> None:
        dsn = await harness.create_database(admin_dsn, name)
        conn = await ledger_db.connect(dsn)
        try:
            await migrate.upgrade(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield name
    finally:
        asyncio.run(harness.drop_database(admin_dsn, name))


# Sync fixtures (each runs its own short event loop) so that sync tests, such
# as hypothesis state machines, can use them as well as async tests.
@pytest.fixture
def db_dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh, migrated database, dropped after the test."""
    with harness.private_database(admin_dsn, "switchd_t", template=template_db) as db:
        yield db.dsn


@pytest.fixture
def empty_db_dsn(admin_dsn: str) -> Iterator[str]:
    """DSN of a fresh database with no schema at all."""
    with harness.private_database(admin_dsn, "switchd_e") as db:
        yield db.dsn


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await ledger_db.create_pool(db_dsn, 1, 6)
    try:
        yield p
    finally:
        await p.close()
