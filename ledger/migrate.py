"""Schema migrations (numbered SQL files in ``ledger/migrations``) and function files (``ledger/sql``).

A file ``0003_holds.sql`` is version 3. ``upgrade`` takes a PostgreSQL
advisory lock so two daemons or CLIs never race, applies each missing file in
its own transaction, and refuses a database whose schema is newer than the
code (a newer daemon has already been there; running old code on it is how
books get corrupted).

Migrations hold tables, indexes, constraints, triggers and data: applied once,
never edited afterwards. Functions (and trigger functions) live one per file,
``ledger/sql/<schema>.<name>.sql``, written as ``CREATE OR REPLACE FUNCTION``, so
that a change to one is a diff of one file. After the migrations, in the same
lock, ``upgrade`` applies every function file whose content differs from what
was last applied (``public.switchd_schema_functions``, from migration 0011), each
in its own transaction, in dependency order: a file names the function files it
needs with ``-- requires: schema.name`` lines. Replacing a function's body takes
no lock on any table. A migration that changes a function's signature (its
arguments) drops the old one (``DROP FUNCTION IF EXISTS`` with the old argument
types), since CREATE OR REPLACE would create a second function beside it.
Migrations 0001-0010 created functions before they had files; their files
replace those with the same bodies.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ledger.errors import SwitchdError
from ledger.roles import privilege_message

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FUNCTIONS_DIR = Path(__file__).resolve().parent / "sql"
# Arbitrary but fixed: the advisory-lock key for schema changes ("SWDMIGR" in ASCII).
MIGRATION_LOCK_KEY = 0x5357444D49475200 >> 8
MIGRATION_LOCK_WAIT_S = 120
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_FUNCTION_NAME = re.compile(r"^([a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(.*)$", re.M)
FUNCTIONS_TABLE = "public.switchd_schema_functions"


class MigrationError(SwitchdError):
    """The schema cannot be brought to this code's version; ``str()`` says why."""


class _SqlFile:
    """What a migration and a function file share: a path, its text and its checksum."""

    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Migration(_SqlFile):
    version: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        """How ``db upgrade`` names it: ``0003 holds``."""
        return f"{self.version:04d} {self.name}"


@dataclass(frozen=True)
class FunctionFile(_SqlFile):
    """One function's definition: ``name`` is ``schema.function``, the file's name without .sql."""

    name: str
    path: Path
    requires: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How ``db upgrade`` names it: ``function ledger.post_batch``."""
        return f"function {self.name}"


@dataclass(frozen=True)
class FunctionStatus:
    name: str
    state: str  # applied | pending | changed (the file differs from what was applied) | unknown (no file)
    applied_at: str | None


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied: bool
    applied_at: str | None
    modified: bool = False  # the file differs from what was applied


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; gaps or duplicates are an error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name}: name must be NNNN_words.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise MigrationError(f"migration {mig.path.name}: expected version {expected:04d}")
    return found


def discover_functions(directory: Path = FUNCTIONS_DIR) -> list[FunctionFile]:
    """The function files in the order to apply them: each after those it requires, else by name.

    A file must define (CREATE OR REPLACE) the function it is named after; an unknown
    or circular requirement is an error.
    """
    files: dict[str, FunctionFile] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FUNCTION_NAME.match(path.name)
        if not m:
            raise MigrationError(f"function file {path.name}: name must be schema.function.sql")
        name = m.group(1)
        text = path.read_text(encoding="utf-8")
        if not re.search(rf"\bCREATE\s+OR\s+REPLACE\s+FUNCTION\s+{re.escape(name)}\s*\(", text, re.I):
            raise MigrationError(f"function file {path.name}: must say CREATE OR REPLACE FUNCTION {name}(...)")
        requires = tuple(r for line in _REQUIRES.findall(text) for r in re.split(r"[\s,]+", line) if r)
        files[name] = FunctionFile(name, path, requires)
    for f in files.values():
        unknown = [r for r in f.requires if r not in files]
        if unknown:
            raise MigrationError(f"function file {f.path.name}: requires {', '.join(unknown)}, which has no file")
    ordered: list[FunctionFile] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(f: FunctionFile) -> None:
        if f.name in placed:
            return
        if f.name in visiting:
            raise MigrationError(f"function file {f.path.name}: circular requirement")
        visiting.add(f.name)
        for r in sorted(f.requires):
            place(files[r])
        visiting.discard(f.name)
        placed.add(f.name)
        ordered.append(f)

    for name in sorted(files):
        place(files[name])
    return ordered


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS public.switchd_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def _has_statements(sql: str) -> bool:
    r"""False for SQL that is only comments and whitespace.

    >>> _has_statements("-- nothing yet\n"), _has_statements("SELECT 1; -- x")
    (False, True)
    """
    body = re.sub(r"/\*.*?\*/", "", sql, flags=re.S)
    body = "\n".join(line.split("--", 1)[0] for line in body.splitlines())
    return bool(body.strip().strip(";").strip())


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM public.switchd_schema_migrations")
    return {r["version"]: r for r in rows}


async def _functions_table_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(f"SELECT to_regclass('{FUNCTIONS_TABLE}') IS NOT NULL"))


async def _applied_functions(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    if not await _functions_table_exists(conn):
        return {}
    rows = await conn.fetch(f"SELECT name, checksum, applied_at FROM {FUNCTIONS_TABLE}")
    return {r["name"]: r for r in rows}


async def _apply_functions(conn: asyncpg.Connection, functions: list[FunctionFile]) -> list[FunctionFile]:
    """Apply each function file whose content differs from what was applied, in order."""
    if not functions:
        return []
    if not await _functions_table_exists(conn):
        raise MigrationError(f"{FUNCTIONS_TABLE} does not exist: the migrations did not create it")
    applied = await _applied_functions(conn)
    done: list[FunctionFile] = []
    for fn in functions:
        checksum = fn.checksum
        row = applied.get(fn.name)
        if row is not None and row["checksum"] == checksum:
            continue
        async with conn.transaction():
            await conn.execute(fn.sql)
            await conn.execute(
                f"INSERT INTO {FUNCTIONS_TABLE}(name, checksum) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()",
                fn.name, checksum,
            )
        done.append(fn)
    return done


async def upgrade(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR,
                  functions_directory: Path = FUNCTIONS_DIR) -> list[Migration | FunctionFile]:
    """Apply every missing migration, then every new or changed function file; return what was
    applied, in order (empty when up to date)."""
    migrations = discover(directory)
    functions = discover_functions(functions_directory)
    # Bounded: another instance migrating a large table must not hang us for ever.
    await conn.execute(f"SET lock_timeout = '{MIGRATION_LOCK_WAIT_S}s'")
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        applied = await _applied(conn)
        newest_known = migrations[-1].version if migrations else 0
        newer = sorted(v for v in applied if v > newest_known)
        if newer:
            raise MigrationError(
                f"database schema is at version {max(newer)}, newer than this code's {newest_known}; "
                "upgrade switchd instead of running old code on it"
            )
        done: list[Migration | FunctionFile] = []
        for mig in migrations:
            if mig.version in applied:
                continue
            async with conn.transaction():
                if _has_statements(mig.sql):  # a comment-only file is a valid (empty) step
                    await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO public.switchd_schema_migrations(version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version, mig.name, mig.checksum,
                )
            done.append(mig)
        # After the migrations: a function may read a table or column they just made.
        done += await _apply_functions(conn, functions)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def status(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[MigrationStatus]:
    """Every known migration with whether and when it was applied."""
    migrations = discover(directory)
    await conn.execute(_BOOKKEEPING)
    applied = await _applied(conn)
    out = [
        MigrationStatus(m.version, m.name, m.version in applied,
                        applied[m.version]["applied_at"].isoformat() if m.version in applied else None,
                        m.version in applied and applied[m.version]["checksum"] != m.checksum)
        for m in migrations
    ]
    known = {m.version for m in migrations}
    for v, r in sorted(applied.items()):
        if v not in known:
            out.append(MigrationStatus(v, r["name"] + " (unknown to this code)", True, r["applied_at"].isoformat()))
    return out


async def function_status(conn: asyncpg.Connection,
                          functions_directory: Path = FUNCTIONS_DIR) -> list[FunctionStatus]:
    """Every function file (in the order upgrade applies them) with its state, then any function
    recorded as applied that this code has no file for."""
    functions = discover_functions(functions_directory)
    applied = await _applied_functions(conn)
    out: list[FunctionStatus] = []
    for fn in functions:
        row = applied.get(fn.name)
        if row is None:
            out.append(FunctionStatus(fn.name, "pending", None))
        else:
            state = "applied" if row["checksum"] == fn.checksum else "changed"
            out.append(FunctionStatus(fn.name, state, row["applied_at"].isoformat()))
    known = {fn.name for fn in functions}
    for name, row in sorted(applied.items()):
        if name not in known:
            out.append(FunctionStatus(name, "unknown", row["applied_at"].isoformat()))
    return out


async def check_current(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR,
                        functions_directory: Path = FUNCTIONS_DIR) -> None:
    """Raise MigrationError unless the database is exactly at this code's version: every
    migration applied, unchanged, none newer; every function file applied as it is now.

    A role that may not read the bookkeeping tables gets a MigrationError that names the
    missing privilege and the fix (``switchd db roles``), not a driver exception."""
    try:
        await _check_current(conn, directory, functions_directory)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationError(privilege_message(exc)) from None


async def _check_current(conn: asyncpg.Connection, directory: Path, functions_directory: Path) -> None:
    migrations = discover(directory)
    exists = await conn.fetchval("SELECT to_regclass('public.switchd_schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if exists else {}
    newest = migrations[-1].version if migrations else 0
    top = max(applied, default=0)
    if top > newest:
        raise MigrationError(f"database schema is at version {top}, newer than this code's {newest}")
    changed = [m.path.name for m in migrations
               if m.version in applied and applied[m.version]["checksum"] != m.checksum]
    if changed:
        # The schema was built from other SQL than this code ships: code and database
        # may disagree on constraints or functions. Applied migrations are never edited.
        raise MigrationError(f"migrations {', '.join(changed)} changed after they were applied to this database")
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise MigrationError(f"database schema is missing migrations {missing}; run `switchd db upgrade`")
    stale = [f"{s.name} ({s.state})" for s in await function_status(conn, functions_directory)
             if s.state in ("pending", "changed")]
    if stale:
        raise MigrationError(f"database functions are not those of this code: {', '.join(stale)}; "
                             "run `switchd db upgrade`")
