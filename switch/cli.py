"""The ``switchd`` command line: one click group, one subcommand per job.

Every command takes ``--config`` (else ``$SWITCHD_CONFIG``, else defaults).
Errors an operator can fix are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from ledger import db as ledger_db
from ledger import migrate
from ledger.embedded import EmbeddedError
from ledger.errors import first_line
from switch import runtime
from switch.config import Config, ConfigError, load_config
from switch.logs import configure as configure_logs

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"switchd: {message}", err=True)
    sys.exit(code)


def load(ctx: click.Context) -> Config:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in obj:
        try:
            obj["config"] = load_config(obj.get("config_path"))
        except ConfigError as exc:
            fail(str(exc))
    cfg: Config = obj["config"]
    return cfg


def with_db(ctx: click.Context, body: Callable[[Any], Awaitable[T]], *,
            pool_statement_s: float | None = None) -> T:
    """Run ``body(conn)`` against the configured (or embedded) database; one-line errors.

    With ``pool_statement_s``, ``body`` gets a small pool instead (work that posts
    through the Ledger engine), whose statements may run that long.
    """
    cfg = load(ctx)
    configure_logs("warning", stream=sys.stderr)

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
    except (EmbeddedError, migrate.MigrationError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"database unreachable: {exc}")
    except Exception as exc:  # asyncpg errors: one line, never a traceback
        import asyncpg

        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            fail(f"database error: {first_line(exc)}")
        raise


def parse_date(value: str | None, option: str = "--date") -> dt.date | None:
    """An option's YYYY-MM-DD value (None when not given); a bad one ends the command in one line."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: expected YYYY-MM-DD, got {value!r}")


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human()


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration file (default: $SWITCHD_CONFIG, else built-in defaults).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """switchd: ISO 8583 acquiring switch and points/stored-value ledger."""
    ctx.ensure_object(dict)["config_path"] = config_path


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from switch.daemon import serve as serve_daemon

    cfg = load(ctx)
    sys.exit(serve_daemon(cfg))


@cli.group()
def db() -> None:
    """Database schema: upgrade and status."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every missing migration (idempotent; safe to run from several hosts)."""

    async def body(conn: Any) -> list[migrate.Migration | migrate.FunctionFile]:
        return await migrate.upgrade(conn)

    done = with_db(ctx, body)
    if done:
        for m in done:
            click.echo(f"applied {m.label}")
    else:
        click.echo("schema is up to date")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and function files, and whether each is applied."""

    async def body(conn: Any) -> tuple[list[migrate.MigrationStatus], list[migrate.FunctionStatus]]:
        return await migrate.status(conn), await migrate.function_status(conn)

    rows, functions = with_db(ctx, body)

    def human() -> None:
        for r in rows:
            state = "MODIFIED" if r.modified else ("applied" if r.applied else "pending")
            click.echo(f"{r.version:04d}  {state:8}  {r.name}  {r.applied_at or ''}")
        for f in functions:
            state = f.state.upper() if f.state in ("changed", "unknown") else f.state
            click.echo(f"func  {state:8}  {f.name}  {f.applied_at or ''}")

    emit([r.__dict__ for r in rows] + [{"function": f.name, "state": f.state, "applied_at": f.applied_at}
                                       for f in functions], as_json, human)


def register(group: click.Group) -> None:
    """Attach a command group defined elsewhere (terminal, program, ...)."""
    cli.add_command(group)


def main() -> None:
    # Command groups from other modules register themselves on import.
    from switch import commands  # noqa: F401

    cli(obj={})
