"""Back-office CLI for end of day: ``eod run``, ``batch show``, ``txn search|show``, ``stats``.

Every command takes ``--json``. The work is in ``ledger/`` (eod, batches,
search, stats); this module parses arguments and prints.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from ledger import batches, eod, search, stats
from ledger import business_day as bday
from ledger.loyalty.outcomes import TxnType
from specs.vocabulary import receipt_key_of
from switch.cli import cli, emit, fail, load, parse_date, with_db
from switch.daemon import ledger_settings
from switch.handlers.responses import reasons_answered

T = TypeVar("T")


def settlement_dir(ctx: click.Context, override: str | None) -> Path:
    """``--dir``, else ``[eod] settlement_dir``, else ``<state_dir>/settlement``."""
    if override:
        return Path(override)
    cfg = load(ctx)
    if cfg.eod.settlement_dir:
        return Path(cfg.eod.settlement_dir)
    return cfg.state_path / "settlement"


def with_pool(ctx: click.Context, body: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """``cli.with_db`` with a pool and long statements; a held end-of-day lock exits 3."""
    cfg = load(ctx)
    try:
        return with_db(ctx, body, pool_statement_s=max(cfg.database.timeout_statement_s, 600.0))
    except eod.EodBusy as exc:
        fail(str(exc), code=3)
    except ValueError as exc:  # a day not open yet, a clearing refusal
        fail(str(exc))


# ------------------------------------------------------------------ eod


@cli.group("eod")
def eod_group() -> None:
    """End of day: cut-over, clearing, settlement files, reconciliation."""


@eod_group.command("run")
@click.option("--date", "date_text", default=None, help="Business date YYYY-MM-DD (default: the open day).")
@click.option("--dir", "dir_text", default=None, help="Settlement file directory (default: <state_dir>/settlement).")
@click.option("--wait-s", "wait_s", type=click.FloatRange(0, 3600), default=None,
              help="Wait this long for another run's lock before refusing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def eod_run(ctx: click.Context, date_text: str | None, dir_text: str | None, wait_s: float | None,
            as_json: bool) -> None:
    """Close the day and settle it; exit 1 when reconciliation fails, 3 when another run holds the lock."""
    from ledger.clearing import ClearingError

    day = parse_date(date_text)
    directory = settlement_dir(ctx, dir_text)
    cfg = load(ctx)
    # The configured bounds, with room for settlement batches behind a cut-over.
    settings = replace(ledger_settings(cfg), timeout_post_s=max(cfg.ledger.timeout_post_s, 60.0))

    async def body(pool: asyncpg.Pool) -> eod.EodReport:
        try:
            return await eod.run(pool, day, directory,
                                 wait_lock_s=cfg.eod.wait_lock_s if wait_s is None else wait_s,
                                 ledger_settings=settings)
        except ClearingError as exc:
            raise ValueError(str(exc)) from None

    report = with_pool(ctx, body)
    data = report.as_dict()

    def human() -> None:
        click.echo(f"business day {data['business_date']}: "
                   f"{'cut over' if report.cut_over else 'already closed'}")
        c = data["clearing"]
        if c:
            click.echo(f"clearing: {c['merchants']} merchants, {c['journals_posted']} settlement journals posted, "
                       f"{c['journals_existing']} already there; net {c['net_total_minor']}")
        click.echo(f"files: {len(report.files)} in {directory / data['business_date']}")
        for p in (report.recon.problems if report.recon else []):
            click.echo(f"FAIL  {p.check}  {p.detail}")
        click.echo(f"reconciliation: {'ok' if report.ok else 'FAILED'}; timings {data['timings_s']}")

    emit(data, as_json, human)
    if not report.ok:
        sys.exit(1)


# ------------------------------------------------------------------ batch


@cli.group("batch")
def batch_group() -> None:
    """Terminal batches (0500 settlement)."""


@batch_group.command("show")
@click.argument("terminal_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def batch_show(ctx: click.Context, terminal_id: str, as_json: bool) -> None:
    """The open batch of a terminal: both sides' totals and the transactions that may differ."""

    async def body(conn: Any) -> dict[str, Any]:
        return await batches.show(conn, terminal_id.rstrip(" "))

    data = with_db(ctx, body)

    def human() -> None:
        ob = data["open_batch"]
        click.echo(f"terminal {terminal_id}: open batch "
                   f"{ob['batch_number'] + ' (attempts ' + str(ob['attempts']) + ')' if ob else '(none yet)'}")
        click.echo(f"  host     {data['host']}")
        if ob and ob["terminal"]:
            click.echo(f"  terminal {ob['terminal']}")
            click.echo(f"  difference {data.get('difference')}")
        for t in data["differing"]:
            click.echo(f"  differs? id={t['id']} rrn={t['rrn']} {t['type']} {t['reason']} amount={t['amount']} "
                       f"counted={t['counted']}")
        click.echo(f"  {len(data['transactions'])} transactions in the open batch; "
                   f"{len(data['closed_batches'])} recent closed batches")

    emit(data, as_json, human)


# ------------------------------------------------------------------ txn


@cli.group("txn")
def txn_group() -> None:
    """Transaction search and detail."""


@txn_group.command("search")
@click.option("--from", "date_from", default=None, help="First business date YYYY-MM-DD.")
@click.option("--to", "date_to", default=None, help="Last business date YYYY-MM-DD.")
@click.option("--merchant", default=None)
@click.option("--terminal", default=None)
@click.option("--pan", default=None, help="Full card number (shown masked).")
@click.option("--rrn", default=None)
@click.option("--type", "txn_type", type=click.Choice([str(t) for t in TxnType]), default=None)
@click.option("--response-code", "response_code", default=None, help="ISO field 39, e.g. 51.")
@click.option("--reason", default=None, help="Domain reason, e.g. insufficient.")
@click.option("--amount-min", type=int, default=None)
@click.option("--amount-max", type=int, default=None)
@click.option("--limit", type=click.IntRange(1, search.LIMIT_MAX), default=search.LIMIT_DEFAULT, show_default=True)
@click.option("--before-id", type=int, default=None, help="Next page: the last id of the previous one.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def txn_search(ctx: click.Context, date_from: str | None, date_to: str | None, merchant: str | None,
               terminal: str | None, pan: str | None, rrn: str | None, txn_type: str | None,
               response_code: str | None, reason: str | None, amount_min: int | None, amount_max: int | None,
               limit: int, before_id: int | None, as_json: bool) -> None:
    """Search transactions by any combination of criteria, newest first."""
    reasons: tuple[str, ...] | None = None
    if response_code is not None:
        reasons = tuple(str(r) for r in reasons_answered(response_code))
        if not reasons:
            fail(f"--response-code: no reason answers {response_code!r}")
    if reason is not None:
        reasons = (reason,) if reasons is None else tuple(r for r in reasons if r == reason)
    filters = search.Filters(
        date_from=parse_date(date_from, "--from"), date_to=parse_date(date_to, "--to"), merchant_id=merchant,
        terminal_id=terminal, pan=pan, rrn=rrn, txn_type=txn_type, reasons=reasons, amount_min=amount_min,
        amount_max=amount_max, before_id=before_id)

    async def body(conn: Any) -> dict[str, Any]:
        return await search.search(conn, filters, limit)

    data = with_db(ctx, body)

    def human() -> None:
        for t in data["transactions"]:
            click.echo(f"{t['id']:>10} {t['business_date']} {t['rrn'] or '-':12} {t['terminal_id'] or '-':8} "
                       f"{t['merchant_id'] or '-':15} {t['txn_type']:11} {t['reason']:18} {t['amount']:>12} "
                       f"{t['pan'] or '-'}")
        if data["next_before_id"] is not None:
            click.echo(f"more: --before-id {data['next_before_id']}")

    emit(data, as_json, human)


@txn_group.command("show")
@click.argument("rrn")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def txn_show(ctx: click.Context, rrn: str, as_json: bool) -> None:
    """One transaction by RRN: the request, every leg, the stored response (PAN masked)."""

    async def body(conn: Any) -> dict[str, Any] | None:
        return await search.show(conn, rrn, response_key=receipt_key_of)

    data = with_db(ctx, body)
    if data is None:
        fail(f"no transaction with RRN {rrn}", code=1)

    def human() -> None:
        assert data is not None
        for rec in data["records"]:
            click.echo(f"RRN {rrn}: {rec['txn_type']} {rec['reason']} business date {rec['business_date']} "
                       f"journal {rec['journal_id']}")
            click.echo(f"  request  {rec['request']}")
            for leg in rec["legs"]:
                click.echo(f"  leg {leg['leg']}: {leg['owner_kind']}:{leg['owner_id']}:{leg['purpose']} "
                           f"{leg['asset']} {leg['amount']:+d} -> {leg['balance_after']}")
            click.echo(f"  response {rec['response']}")

    emit(data, as_json, human)


# ------------------------------------------------------------------ stats


@cli.command("stats")
@click.option("--date", "date_text", default=None, help="Business date YYYY-MM-DD (default: the open day).")
@click.option("--by", type=click.Choice(sorted(stats.GROUPS)), default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def stats_cmd(ctx: click.Context, date_text: str | None, by: str | None, as_json: bool) -> None:
    """Counts, amounts, points, approval rate, active members and new cards for a day."""
    day = parse_date(date_text)

    async def body(conn: Any) -> dict[str, Any]:
        d = day or await bday.open_date(conn)
        return await stats.day_stats(conn, d, by)

    data = with_db(ctx, body)

    def human() -> None:
        click.echo(f"business day {data['business_date']}: active members {data['active_members']}, "
                   f"new cards {data['new_cards']}")
        for g in data["groups"]:
            click.echo(f"  {g['grp']:15} txns {g['transactions']:>8} approved {g['approved']:>8} "
                       f"rate {g['approval_rate_bps'] / 100:.2f}% money {g['money_amount_minor']} "
                       f"points {g['points_amount']} members {g['active_members']}")

    emit(data, as_json, human)
