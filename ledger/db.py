"""Database connections: a DSN as given, or the embedded cluster; one pool."""

from __future__ import annotations

import json

import asyncpg

# A backend blocked on a lock does not notice that its client has gone (the
# engine abandons a batch after timeout_post_s); PostgreSQL 14+ can check.
CLIENT_CHECK_INTERVAL_MS = 1000
# Memory a whole-day query of reconciliation may use per sort or hash
# before it spills to disk, set for its own transaction only (the server's default, 4 MB, is
# for the many small queries of the switch). Measured at a million journals: the day's hash
# joins and aggregates of entries (3.8 million rows) need 60-380 MB each; with 4 MB they ran
# in batches on disk.
EOD_WORK_MEM_MB = 512


async def for_whole_day_scans(conn: asyncpg.Connection, work_mem_mb: int | None = EOD_WORK_MEM_MB) -> None:
    """Settings of the current transaction for end of day's whole-table queries: hash joins
    (row estimates of "the day" are off by orders of magnitude: a nested loop over them costs
    minutes at a million journals), no JIT, and ``work_mem_mb`` per sort or hash (None: the
    server's own)."""
    sets = ["SET LOCAL enable_nestloop = off", "SET LOCAL jit = off"]
    if work_mem_mb is not None:
        sets.append(f"SET LOCAL work_mem = '{int(work_mem_mb)}MB'")
    await conn.execute("; ".join(sets))


def connection_lost(exc: BaseException) -> bool:
    """True when a connection's state is unknown after ``exc`` (it died, timed out, the server
    shut it down): it must carry nothing more, and a statement it carried may or may not have
    committed. asyncpg reports a connection killed under a statement as a PostgresError of
    class 08 (``ConnectionDoesNotExistError``), not as an InterfaceError; and a statement on a
    connection the server has just told it is going away (an ErrorResponse 57P01 that reached it
    idle, before the socket's close) as an InternalClientError ("cannot switch to state 12;
    another operation (2) is in progress": state 2 is asyncpg consuming that error).

    >>> connection_lost(TimeoutError()), connection_lost(asyncpg.exceptions.UniqueViolationError())
    (True, False)
    >>> connection_lost(asyncpg.InternalClientError("cannot switch to state 12"))
    True
    """
    if isinstance(exc, TimeoutError | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError
                  | asyncpg.exceptions.PostgresConnectionError):
        return True
    code = getattr(exc, "sqlstate", None) or ""
    return code.startswith("08") or code in ("57P01", "57P02", "57P03")


async def init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects would cost a decode per row on the hot
    # path; we keep text and decode where it is read.
    if conn.get_server_version().major >= 14:
        await conn.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}")
    await conn.set_type_codec("jsonb", encoder=lambda v: v if isinstance(v, str) else json.dumps(v),
                              decoder=json.loads, schema="pg_catalog")


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool: no open transaction.

    asyncpg's default reset (unlock all advisory locks, CLOSE ALL, UNLISTEN, RESET
    ALL) is a round trip on every release, about a fifth of the daemon's database
    time per request. We take only transaction-scoped advisory locks on pooled
    connections, never LISTEN and never SET outside a transaction, so a rollback of
    an abandoned transaction is all that can be left to clean.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, size_min: int = 2, size_max: int = 10, timeout_connect_s: float = 10.0,
                      timeout_statement_s: float = 30.0, generic_plans: bool = False) -> asyncpg.Pool:
    """An asyncpg pool with bounded connect and statement times.

    ``generic_plans``: plan each prepared statement once (``plan_cache_mode =
    force_generic_plan``) for a pool that runs the same key lookups and batch calls
    all day. PostgreSQL's default re-plans a statement with array parameters on
    every execution when it guesses that pays; for the daemon's statements it never
    does (measured with psql: the coalesced context read of 10 requests 3.3 ms with
    a plan per execution, 0.9 ms generic; a 40-command post_batch 8 ms -> 5 ms).
    """
    settings = {"application_name": "switchd",
                # Server-side bounds too: command_timeout only stops the client waiting.
                "statement_timeout": str(int(timeout_statement_s * 1000)),
                "idle_in_transaction_session_timeout": str(int(timeout_statement_s * 1000))}
    if generic_plans:
        settings["plan_cache_mode"] = "force_generic_plan"
    pool = await asyncpg.create_pool(
        dsn, min_size=size_min, max_size=size_max, timeout=timeout_connect_s,
        command_timeout=timeout_statement_s, init=init_connection, reset=_reset, server_settings=settings,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, timeout_connect_s: float = 10.0, application_name: str = "switchd-cli") -> asyncpg.Connection:
    """One connection (CLI commands, migrations, the daemon's change feed)."""
    conn = await asyncpg.connect(dsn, timeout=timeout_connect_s, server_settings={"application_name": application_name})
    await init_connection(conn)
    return conn
