"""``switchd db upgrade|status``: the database schema."""

from __future__ import annotations

from typing import Any

import click

from cli.invocation import with_db
from cli.options import JSON
from cli.output import emit, table
from ledger import migrate


@click.group("db")
def db() -> None:
    """Database schema: upgrade and status."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every missing migration, then every new or changed SQL function file (idempotent;
    safe to run from several hosts)."""

    async def body(conn: Any) -> list[migrate.Migration | migrate.FunctionFile]:
        return await migrate.upgrade(conn)

    done = with_db(ctx, body)
    for m in done:
        click.echo(f"applied {m.label}")
    if not done:
        click.echo("schema is up to date")


@db.command("status")
@JSON
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and SQL function files, and whether each is applied."""

    async def body(conn: Any) -> tuple[list[migrate.MigrationStatus], list[migrate.FunctionStatus]]:
        return await migrate.status(conn), await migrate.function_status(conn)

    statuses, functions = with_db(ctx, body)
    rows = [{**s.__dict__, "version": f"{s.version:04d}",
             "state": "MODIFIED" if s.modified else ("applied" if s.applied else "pending")} for s in statuses]
    rows += [{"version": "func", "name": f.name, "applied_at": f.applied_at,
              "state": f.state.upper() if f.state in ("changed", "unknown") else f.state} for f in functions]
    emit([s.__dict__ for s in statuses]
         + [{"function": f.name, "state": f.state, "applied_at": f.applied_at} for f in functions],
         as_json, lambda: table(rows, ["version", "state", "name", "applied_at"]))
