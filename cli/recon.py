"""``switchd recon run``: prove the books (the checks are ``ledger.reconcile``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cli.exits import refuse
from cli.invocation import with_db
from cli.options import DATE, JSON
from cli.output import emit
from ledger import business_day as bday
from ledger import reconcile


@click.group("recon")
def recon() -> None:
    """Reconciliation: prove the books."""


@recon.command("run")
@click.option("--date", "day", type=DATE, default=None,
              help="Business date (default: the last cleared day, else the open day).")
@JSON
@click.pass_context
def recon_run(ctx: click.Context, day: dt.date | None, as_json: bool) -> None:
    """Run every check; exit 1 if any fails, naming the rows involved."""

    async def body(conn: Any) -> reconcile.ReconReport:
        d = day or await conn.fetchval("SELECT max(business_date) FROM eod.clearing_runs") \
            or await bday.open_date(conn)
        return await reconcile.run(conn, d)

    report = with_db(ctx, body)
    problems = report.problems
    assert report.business_date is not None
    data = {"date": report.business_date.isoformat(), "checks": report.checks, "ok": report.ok,
            "cleared": report.cleared, "failures": [p.__dict__ for p in problems]}

    def human() -> None:
        for name in report.checks:
            bad = [p for p in problems if p.check == name]
            click.echo(f"{'FAIL' if bad else 'ok  '}  {name}")
            for p in bad:
                click.echo(f"        {p.detail}")
        if not report.cleared:
            click.echo(f"(day {data['date']} is not cleared: clearing checks skipped)")

    emit(data, as_json, human)
    if problems:
        refuse(f"business day {data['date']}: {len({p.check for p in problems})} checks failed")
