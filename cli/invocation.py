"""What every command gets from its invocation: the configuration and a database connection.

The root group stores ``--config`` and ``--set`` in the context object; the
configuration is loaded once, on first use, so that commands which need none
(``--help``) never read a file.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from cli.exits import refuse
from ledger import db as ledger_db
from ledger.errors import first_line
from ledger.loyalty import card_numbers
from ledger.roles import privilege_message
from switch import keystore, runtime
from switch.config import Config, load_config
from switch.logs import configure as configure_logs

T = TypeVar("T")


def config(ctx: click.Context) -> Config:
    """The configuration: ``--config`` (else $SWITCHD_CONFIG, else defaults), then ``--set``."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"), overrides=obj.get("overrides", ()))
    cfg: Config = obj["config"]
    return cfg


def master_key(ctx: click.Context) -> bytes | None:
    """The configured master key (None when none is configured); KeyStoreError when unreadable."""
    return runtime.master_key(config(ctx))


def previous_master_keys(ctx: click.Context) -> tuple[bytes, ...]:
    """The previous master key during a rotation (``[security] master_key_previous_file``), if any."""
    previous = keystore.load_previous_master_key(config(ctx).security.master_key_previous_file)
    return () if previous is None else (previous,)


def with_db(ctx: click.Context, body: Callable[[Any], Awaitable[T]], *,
            pool_statement_s: float | None = None) -> T:
    """Run ``body(conn)`` against the configured (or embedded) database; one-line errors.

    With ``pool_statement_s``, ``body`` gets a small pool instead (work that posts
    through the Ledger engine), whose statements may run that long.
    """
    cfg = config(ctx)
    configure_logs("warning", stream=sys.stderr)

    # Card numbers are sealed under the master key: a command that issues or finds a card
    # needs it (one without it gets a one-line error when it touches a card number).
    key = runtime.master_key(cfg)
    if key is not None:
        previous = keystore.load_previous_master_key(cfg.security.master_key_previous_file)
        card_numbers.set_master_key(key, () if previous is None else (previous,))

    async def main() -> T:
        with runtime.database_dsn(cfg) as dsn:
            if pool_statement_s is not None:
                pool = await ledger_db.create_pool(dsn, 1, 3, cfg.database.timeout_connect_s,
                                                   timeout_statement_s=pool_statement_s)
                try:
                    return await body(pool)
                finally:
                    await pool.close()
            conn = await ledger_db.connect(dsn, cfg.database.timeout_connect_s)
            try:
                return await body(conn)
            finally:
                await conn.close()

    try:
        return runtime.run(main)
    except OSError as exc:
        refuse(f"database unreachable: {exc}")
    except Exception as exc:  # asyncpg errors: one line, never a traceback
        import asyncpg

        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            refuse(privilege_message(exc))
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            refuse(f"database error: {first_line(exc)}")
        raise


def in_transaction(ctx: click.Context, body: Callable[[Any], Awaitable[T]]) -> T:
    """``with_db`` in one transaction: a refusal (any exception) leaves nothing half-done."""

    async def wrapped(conn: Any) -> T:
        async with conn.transaction():
            return await body(conn)

    return with_db(ctx, wrapped)
