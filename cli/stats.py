"""``switchd stats``: a business day's figures (the work is ``ledger.stats``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cli.invocation import with_db
from cli.options import DATE, JSON
from cli.output import emit, table
from ledger import business_day as bday
from ledger import stats as day_stats


@click.command("stats")
@click.option("--date", "day", type=DATE, default=None, help="Business date (default: the open day).")
@click.option("--by", type=click.Choice(sorted(day_stats.GROUPS)), default=None, help="One row per group.")
@JSON
@click.pass_context
def stats(ctx: click.Context, day: dt.date | None, by: str | None, as_json: bool) -> None:
    """Counts, amounts, points, approval rate, active members and new cards for a day."""

    async def body(conn: Any) -> dict[str, Any]:
        return await day_stats.day_stats(conn, day or await bday.open_date(conn), by)

    data = with_db(ctx, body)

    def human() -> None:
        click.echo(f"business day {data['business_date']}: active members {data['active_members']}, "
                   f"new cards {data['new_cards']}")
        group = data["by"]  # the column's name: merchant, terminal, type, ... or "all"
        rows = [{**g, group: g["grp"], "approval_rate": f"{g['approval_rate_bps'] / 100:.2f}%"}
                for g in data["groups"]]
        table(rows, [group, "transactions", "approved", "approval_rate", "money_amount_minor",
                     "points_amount", "active_members"])

    emit(data, as_json, human)
