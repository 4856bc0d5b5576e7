"""``switchd rate set|list|history`` and ``switchd exchange``: exchange rates between programs and
exchanges from the command line (the rules are ``ledger.loyalty.rates`` and ``ledger.loyalty.exchange``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cli.audit import audit
from cli.exits import not_found, refuse
from cli.invocation import config, in_transaction, with_db
from cli.options import JSON
from cli.output import emit, pairs, table
from ledger.engine import Ledger
from ledger.loyalty import rates
from ledger.loyalty.cards import show_card
from ledger.loyalty.exchange import ExchangeError, convert_points
from ledger.loyalty.outcomes import Channel
from switch.daemon import ledger_settings

RATE_COLUMNS = ["from_program", "to_program", "rate_num", "rate_den", "fee_bps", "effective_from", "created_by"]
AUDITED = ("from_program", "to_program", "rate_num", "rate_den", "fee_bps", "effective_from")


class Rational(click.ParamType):
    """``NUM/DEN`` or ``NUM`` (whole points), each a non-negative integer."""

    name = "NUM/DEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        num, _, den = str(value).partition("/")
        if not num.isdigit() or (den and not den.isdigit()):
            self.fail(f"expected NUM/DEN in whole numbers, e.g. 3/2, got {value!r}", param, ctx)
        return int(num), int(den or "1")


class Timestamp(click.ParamType):
    """An ISO 8601 time with its zone (``2026-03-09T14:00:00+08:00``)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            when = dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"expected an ISO 8601 time, got {value!r}", param, ctx)
        if when.tzinfo is None:
            self.fail(f"the time must carry its zone (e.g. +08:00 or Z), got {value!r}", param, ctx)
        return when


@click.group("rate")
def rate() -> None:
    """Exchange rates between programs' points: set, list (in force), history."""


@rate.command("set")
@click.argument("from_program")
@click.argument("to_program")
@click.argument("rate_value", metavar="NUM/DEN", type=Rational())
@click.option("--fee-bps", type=click.IntRange(0, rates.FEE_BPS_MAX), default=0, show_default=True,
              help="Fee kept by the exchange, in basis points of the converted points.")
@click.option("--effective-from", type=Timestamp(), default=None,
              help="When the rate takes effect (ISO 8601 with zone; default: now).")
@JSON
@click.pass_context
def rate_set(ctx: click.Context, from_program: str, to_program: str, rate_value: tuple[int, int], fee_bps: int,
             effective_from: dt.datetime | None, as_json: bool) -> None:
    """Publish a rate: NUM/DEN points of TO_PROGRAM per point of FROM_PROGRAM (history is kept)."""
    async def body(conn: Any) -> rates.Rate:
        before = await rates.in_force(conn, from_program, to_program)
        new = await rates.set_rate(conn, from_program, to_program, rate_value[0], rate_value[1], fee_bps,
                                   effective_from, "cli")
        keep = lambda r: None if r is None else {k: str(v) for k, v in r.as_dict().items() if k in AUDITED}  # noqa: E731
        await audit(conn, "rate_set", "exchange_rate", f"{from_program}>{to_program}", keep(before), keep(new))
        return new

    new = in_transaction(ctx, body)
    emit(new.as_dict(), as_json, lambda: click.echo(
        f"rate {new.from_program} -> {new.to_program}: {new.rate_num}/{new.rate_den}, fee {new.fee_bps} bps, "
        f"effective from {new.effective_from.isoformat()}"))


@rate.command("list")
@JSON
@click.pass_context
def rate_list(ctx: click.Context, as_json: bool) -> None:
    """The rates in force now, one per pair of programs."""
    rows = [r.as_dict() for r in with_db(ctx, rates.current)]
    emit(rows, as_json, lambda: table(rows, RATE_COLUMNS))


@rate.command("history")
@click.option("--from", "from_program", default=None, help="Only rates out of this program.")
@click.option("--to", "to_program", default=None, help="Only rates into this program.")
@click.option("--limit", type=click.IntRange(1, rates.HISTORY_ROWS_MAX), default=100, show_default=True,
              help="Rates at most.")
@JSON
@click.pass_context
def rate_history(ctx: click.Context, from_program: str | None, to_program: str | None, limit: int,
                 as_json: bool) -> None:
    """Every rate published (future ones too), newest effective time first."""
    async def body(conn: Any) -> list[rates.Rate]:
        return await rates.history(conn, from_program, to_program, limit)

    rows = [r.as_dict() for r in with_db(ctx, body)]
    emit(rows, as_json, lambda: table(rows, RATE_COLUMNS))


@click.command("exchange")
@click.argument("pan")
@click.option("--from", "from_program", required=True, help="The program whose points the member gives up.")
@click.option("--to", "to_program", required=True, help="The program whose points the member gets.")
@click.option("--points", type=click.IntRange(1, 1_000_000_000), required=True, help="Points of --from to convert.")
@click.option("--key", "request_key", required=True,
              help="The request's key (1..64 characters): the same key again answers the same exchange.")
@JSON
@click.pass_context
def exchange(ctx: click.Context, pan: str, from_program: str, to_program: str, points: int, request_key: str,
             as_json: bool) -> None:
    """Convert a member's points of one program into another's, at the rate in force."""
    cfg = config(ctx)

    async def body(pool: Any) -> dict[str, Any] | str | None:
        card = await show_card(pool, pan)
        if card is None:
            return None
        async with Ledger(pool, ledger_settings(cfg)) as ledger:
            try:
                done = await convert_points(ledger, pool, int(card["id"]), from_program, to_program, points,
                                            request_key, Channel.CLI, None, cfg.exchange)
            except ExchangeError as exc:
                return f"declined ({exc.reason}): {exc}"
        return done.as_dict()

    out = with_db(ctx, body, pool_statement_s=cfg.database.timeout_statement_s)
    if out is None:
        not_found("no such card")
    if isinstance(out, str):
        refuse(out)
    emit(out, as_json, lambda: pairs(out))
