"""Schema migrations: numbered SQL files in ``ledger/migrations``, applied in order.

A file ``0003_holds.sql`` is version 3. ``upgrade`` takes a PostgreSQL
advisory lock so two daemons or CLIs never race, applies each missing file in
its own transaction, and refuses a database whose schema is newer than the
code (a newer daemon has already been there; running old code on it is how
books get corrupted).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ledger.errors import SwitchdError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary but fixed: the advisory-lock key for schema changes ("SWDMIGR" in ASCII).
MIGRATION_LOCK_KEY = 0x5357444D49475200 >> 8
MIGRATION_LOCK_WAIT_S = 120
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(SwitchdError):
    """The schema cannot be brought to this code's version; ``str()`` says why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


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


async def upgrade(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every missing migration; return those applied (empty when up to date)."""
    migrations = discover(directory)
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
        done: list[Migration] = []
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


async def check_current(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> None:
    """Raise MigrationError unless the database is exactly at this code's version."""
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
