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
    """Apply every missing migration (idempotent; safe to run from several hosts)."""

    async def body(conn: Any) -> list[migrate.Migration]:
        return await migrate.upgrade(conn)

    done = with_db(ctx, body)
    for m in done:
        click.echo(f"applied {m.version:04d} {m.name}")
    if not done:
        click.echo("schema is up to date")


@db.command("status")
@JSON
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and whether each is applied."""

    async def body(conn: Any) -> list[migrate.MigrationStatus]:
        return await migrate.status(conn)

    statuses = with_db(ctx, body)
    rows = [{**s.__dict__, "version": f"{s.version:04d}",
             "state": "MODIFIED" if s.modified else ("applied" if s.applied else "pending")} for s in statuses]
    emit([s.__dict__ for s in statuses], as_json,
         lambda: table(rows, ["version", "state", "name", "applied_at"]))
