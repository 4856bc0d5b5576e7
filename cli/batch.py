"""``switchd batch show``: a terminal's open batch (0500 settlement; the work is ``ledger.batches``)."""

from __future__ import annotations

from typing import Any

import click

from cli.invocation import with_db
from cli.options import JSON
from cli.output import emit, plain, table
from ledger import batches


@click.group("batch")
def batch() -> None:
    """Terminal batches (0500 settlement)."""


@batch.command("show")
@click.argument("terminal_id")
@JSON
@click.pass_context
def batch_show(ctx: click.Context, terminal_id: str, as_json: bool) -> None:
    """The open batch of a terminal: both sides' totals and the transactions that may differ."""
    async def body(conn: Any) -> dict[str, Any]:
        return await batches.show(conn, terminal_id.rstrip(" "))

    data = with_db(ctx, body)

    def human() -> None:
        ob = data["open_batch"]
        state = f"{ob['batch_number']} (attempts {ob['attempts']})" if ob else "(none yet)"
        click.echo(f"terminal {terminal_id}: open batch {state}")
        click.echo(f"  host        {plain(data['host'])}")
        if ob and ob["terminal"]:
            click.echo(f"  terminal    {plain(ob['terminal'])}")
            click.echo(f"  difference  {plain(data.get('difference'))}")
        if data["differing"]:
            click.echo("may differ:")
            table(data["differing"], ["id", "rrn", "type", "reason", "amount", "counted"])
        click.echo(f"{len(data['transactions'])} transactions in the open batch; "
                   f"{len(data['closed_batches'])} recent closed batches")

    emit(data, as_json, human)
