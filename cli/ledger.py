"""``switchd ledger export``: the books for accountants (the work is ``ledger.export``)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from cli.invocation import with_db
from cli.options import DATE
from ledger import business_day as bday
from ledger import export
from ledger.settlement_files import write_atomically


@click.group("ledger")
def ledger() -> None:
    """The books: export for accountants."""


@ledger.command("export")
@click.option("--date", "day", type=DATE, default=None, help="Business date (default: the open day).")
@click.option("--format", "fmt", type=click.Choice(["beancount", "csv"]), default="beancount", show_default=True,
              help="beancount (checked by bean-check) or CSV, one line per entry.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="File (default: stdout).")
@click.pass_context
def ledger_export(ctx: click.Context, day: dt.date | None, fmt: str, out_path: str | None) -> None:
    """Write one business day's journals as beancount or CSV."""

    async def body(conn: Any) -> str:
        d = day or await bday.open_date(conn)
        return await (export.beancount(conn, d) if fmt == "beancount" else export.csv_text(conn, d))

    text = with_db(ctx, body)
    if out_path:
        write_atomically(Path(out_path), text.encode("utf-8"))
        click.echo(f"wrote {out_path}")
    else:
        sys.stdout.write(text)
