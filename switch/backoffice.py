"""Back-office CLI: ledger export and reconciliation (end of day builds on these)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ledger import business_day as bday
from ledger import export, reconcile
from ledger.settlement_files import write_atomically
from switch.cli import cli, emit, parse_date, with_db


@cli.group("ledger")
def ledger_group() -> None:
    """The books: export for accountants."""


@ledger_group.command("export")
@click.option("--date", "date_text", default=None, help="Business date YYYY-MM-DD (default: the open day).")
@click.option("--format", "fmt", type=click.Choice(["beancount", "csv"]), default="beancount", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="File (default: stdout).")
@click.pass_context
def ledger_export(ctx: click.Context, date_text: str | None, fmt: str, out_path: str | None) -> None:
    """Write one business day's journals as beancount or CSV."""
    day = parse_date(date_text)

    async def body(conn: Any) -> str:
        d = day or await bday.open_date(conn)
        return await (export.beancount(conn, d) if fmt == "beancount" else export.csv_text(conn, d))

    text = with_db(ctx, body)
    if out_path:
        write_atomically(Path(out_path), text.encode("utf-8"))
        click.echo(f"wrote {out_path}")
    else:
        sys.stdout.write(text)


@cli.group("recon")
def recon_group() -> None:
    """Reconciliation: prove the books."""


@recon_group.command("run")
@click.option("--date", "date_text", default=None,
              help="Business date YYYY-MM-DD (default: the last cleared day, else the open day).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def recon_run(ctx: click.Context, date_text: str | None, as_json: bool) -> None:
    """Run every check (ledger.reconcile); exit 1 if any fails, naming the rows involved."""
    day = parse_date(date_text)

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
        sys.exit(1)
