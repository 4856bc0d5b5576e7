"""``switchd report revenue``: the operator's income by day, kind, merchant and program (``ledger.revenue``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cli.invocation import with_db
from cli.options import DATE, JSON
from cli.output import emit, table
from ledger import revenue


@click.group("report")
def report() -> None:
    """Reports for the operator."""


@report.command("revenue")
@click.option("--from", "date_from", type=DATE, required=True, help="First business day.")
@click.option("--to", "date_to", type=DATE, required=True, help="Last business day.")
@JSON
@click.pass_context
def report_revenue(ctx: click.Context, date_from: dt.date, date_to: dt.date, as_json: bool) -> None:
    """Income (fees, mall sales, promotion fees, top-up card sales, breakage) per day, merchant and program."""
    revenue.check_range(date_from, date_to)
    data: dict[str, Any] = with_db(ctx, lambda conn: revenue.report(conn, date_from, date_to))

    def human() -> None:
        table(data["rows"], ["day", "kind", "merchant_id", "program", "currency", "amount_minor"])
        click.echo("totals:")
        table(data["totals"], ["kind", "currency", "amount_minor"])

    emit(data, as_json, human)
