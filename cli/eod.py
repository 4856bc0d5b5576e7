"""``switchd eod run``: close a business day and settle it (the work is ``ledger.eod``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import asyncpg
import click

from cli.audit import audit
from cli.exits import refuse
from cli.invocation import config, with_db
from cli.options import DATE, JSON
from cli.output import emit, plain
from ledger import eod as ledger_eod
from ledger.loyalty import chip_data
from switch.daemon import ledger_settings

# Room for the settlement batches behind a cut-over, whatever the daemon's bounds are.
TIMEOUT_STATEMENT_MIN_S = 600.0
TIMEOUT_POST_MIN_S = 60.0


def settlement_dir(ctx: click.Context, override: str | None) -> Path:
    """``--dir``, else ``[eod] settlement_dir``, else ``<state_dir>/settlement``."""
    if override:
        return Path(override)
    cfg = config(ctx)
    if cfg.eod.settlement_dir:
        return Path(cfg.eod.settlement_dir)
    return cfg.state_path / "settlement"


@click.group("eod")
def eod() -> None:
    """End of day: cut-over, clearing, settlement files, reconciliation."""


@eod.command("run")
@click.option("--date", "day", type=DATE, default=None, help="Business date (default: the open day).")
@click.option("--dir", "dir_text", default=None, help="Settlement file directory (default: <state_dir>/settlement).")
@click.option("--wait-s", "wait_s", type=click.FloatRange(0, 3600), default=None,
              help="Wait this long for another run's lock before refusing (exit 3).")
@JSON
@click.pass_context
def eod_run(ctx: click.Context, day: dt.date | None, dir_text: str | None, wait_s: float | None,
            as_json: bool) -> None:
    """Close the day and settle it; exit 1 when reconciliation fails, 3 when another run holds the lock."""
    directory = settlement_dir(ctx, dir_text)
    cfg = config(ctx)
    settings = replace(ledger_settings(cfg), timeout_post_s=max(cfg.ledger.timeout_post_s, TIMEOUT_POST_MIN_S))

    async def body(pool: asyncpg.Pool) -> ledger_eod.EodReport:
        report = await ledger_eod.run(pool, day, directory,
                                      wait_lock_s=cfg.eod.wait_lock_s if wait_s is None else wait_s,
                                      ledger_settings=settings)
        async with pool.acquire() as conn:  # eod commits step by step: the entry follows the run
            await audit(conn, "eod_run", "business_day", report.business_date.isoformat(), None,
                        {"cut_over": report.cut_over, "files": len(report.files), "reconciled": report.ok})
            await chip_data.purge(conn, cfg.security.chip_data_keep_days)
        return report

    try:
        report = with_db(ctx, body, pool_statement_s=max(cfg.database.timeout_statement_s,
                                                         TIMEOUT_STATEMENT_MIN_S))
    except ValueError as exc:  # a day not open yet
        refuse(str(exc))
    data = report.as_dict()

    def human() -> None:
        click.echo(f"business day {data['business_date']}: "
                   f"{'cut over' if report.cut_over else 'already closed'}")
        c = data["clearing"]
        if c:
            click.echo(f"clearing: {c['merchants']} merchants, {c['journals_posted']} settlement journals posted, "
                       f"{c['journals_existing']} already there; net (minor units) {plain(c['net_total_minor'])}")
        click.echo(f"files: {len(report.files)} in {directory / data['business_date']}")
        for p in (report.recon.problems if report.recon else []):
            click.echo(f"FAIL  {p.check}  {p.detail}")
        click.echo(f"reconciliation: {'ok' if report.ok else 'FAILED'}; timings (s) {plain(data['timings_s'])}")

    emit(data, as_json, human)
    if not report.ok:
        refuse(f"business day {data['business_date']}: reconciliation failed")
