"""Database connections: a DSN as given, or the embedded cluster; one pool."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects would cost a decode per row on the hot
    # path; we keep text and decode where it is read.
    await conn.set_type_codec("jsonb", encoder=lambda v: v if isinstance(v, str) else json.dumps(v),
                              decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, size_min: int = 2, size_max: int = 10, timeout_connect_s: float = 10.0,
                      timeout_statement_s: float = 30.0) -> asyncpg.Pool:
    """An asyncpg pool with bounded connect and statement times."""
    pool = await asyncpg.create_pool(
        dsn, min_size=size_min, max_size=size_max, timeout=timeout_connect_s,
        command_timeout=timeout_statement_s, init=_init_connection,
        server_settings={"application_name": "switchd"},
    )
    assert pool is not None
    return pool


async def connect(dsn: str, timeout_connect_s: float = 10.0) -> asyncpg.Connection:
    """One connection (CLI commands, migrations)."""
    conn = await asyncpg.connect(dsn, timeout=timeout_connect_s, server_settings={"application_name": "switchd-cli"})
    await _init_connection(conn)
    return conn
