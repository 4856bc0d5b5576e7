"""Provisioning CLI: ``switchd program|merchant|card ...`` and ``switchd demo seed``.

Thin: argument parsing and output here, rules in ``ledger.loyalty``. Each
command runs in one database transaction, so a bad argument or a clash leaves
nothing half-created; operator mistakes are one line and exit status 2.
PANs are printed masked everywhere; only `demo seed --show-pans` prints its test cards whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from ledger.loyalty import cards, demo, merchants, programs
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import mask_pan, parse_earn_rate
from switch.cli import emit, fail, register, with_db
from switch.terminals import TerminalError, add_terminal

T = TypeVar("T")


def _run(ctx: click.Context, body: Callable[[Any], Awaitable[T]]) -> T:
    """``with_db`` in one transaction; ProvisioningError becomes one line and exit 2."""

    async def wrapped(conn: Any) -> tuple[bool, Any]:
        try:
            async with conn.transaction():
                return True, await body(conn)
        except (ProvisioningError, TerminalError) as exc:
            return False, str(exc)

    done, value = with_db(ctx, wrapped)
    if not done:
        fail(str(value))
    result: T = value
    return result


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _pairs(data: dict[str, Any]) -> None:
    for k, v in data.items():
        click.echo(f"{k:28} {v}")


JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

# ---------------------------------------------------------------- programs


@click.group("program")
def program() -> None:
    """Points programs: add, list, show, lottery."""


@program.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["alliance", "hosted"]), required=True)
@click.option("--issue-price-minor", type=click.IntRange(min=0, max=programs.BIGINT_MAX), required=True,
              help="What an issuing merchant owes per point, in minor units.")
@click.option("--redeem-value-minor", type=click.IntRange(min=0, max=programs.BIGINT_MAX), required=True,
              help="What a redeeming merchant is paid per point, in minor units.")
@click.option("--currency", default=programs.DEFAULT_CURRENCY, show_default=True, help="ISO 4217 numeric code.")
@click.option("--pin-required-for-redeem", is_flag=True)
@click.option("--max-points", "txn_max_points", type=click.IntRange(min=1, max=programs.BIGINT_MAX), default=10_000_000,
              show_default=True, help="Per-transaction maximum, in points.")
@click.pass_context
def program_add(ctx: click.Context, code: str, name: str, kind: str, issue_price_minor: int,
                redeem_value_minor: int, currency: str, pin_required_for_redeem: bool, txn_max_points: int) -> None:
    """Add a program (its points asset is PTS:CODE)."""
    _run(ctx, lambda conn: programs.add_program(conn, code, name, kind, issue_price_minor, redeem_value_minor,
                                                currency, pin_required_for_redeem, txn_max_points))
    click.echo(f"added program {code} ({kind}, asset PTS:{code})")


@program.command("list")
@JSON
@click.pass_context
def program_list(ctx: click.Context, as_json: bool) -> None:
    """List programs."""
    rows = _run(ctx, programs.list_programs)
    emit(rows, as_json, lambda: _table(rows, ["code", "name", "kind", "currency_asset", "issue_price_minor",
                                              "redeem_value_minor", "lottery_price_points", "merchants"]))


@program.command("show")
@click.argument("code")
@JSON
@click.pass_context
def program_show(ctx: click.Context, code: str, as_json: bool) -> None:
    """Show one program with its prize table."""
    row = _run(ctx, lambda conn: programs.show_program(conn, code))
    if row is None:
        fail(f"no program {code}")

    def human() -> None:
        prizes = row.pop("lottery_prizes")
        _pairs(row)
        for p in prizes:
            click.echo(f"  prize {p['code']:16} {p['points']:>10} points  weight {p['weight']}")

    emit(row, as_json, human)


@program.command("lottery")
@click.argument("code")
@click.option("--price", "price_points", type=click.IntRange(min=1, max=programs.BIGINT_MAX), required=True,
              help="Draw price in points.")
@click.option("--prize", "prizes", multiple=True, required=True, help="CODE:POINTS:WEIGHT, repeatable.")
@click.pass_context
def program_lottery(ctx: click.Context, code: str, price_points: int, prizes: tuple[str, ...]) -> None:
    """Set a program's lottery: draw price and prize table (replaces the old one)."""
    try:
        table = [programs.parse_prize(p) for p in prizes]
    except ProvisioningError as exc:
        fail(str(exc))
    _run(ctx, lambda conn: programs.set_lottery(conn, code, price_points, table))
    click.echo(f"program {code}: lottery at {price_points} points, {len(table)} prizes")


# ---------------------------------------------------------------- merchants


@click.group("merchant")
def merchant() -> None:
    """Merchants: add, list, show, disable, enable."""


@merchant.command("add")
@click.argument("merchant_id")
@click.option("--name", required=True)
@click.option("--program", "program_code", required=True)
@click.option("--earn-rate", required=True, help="Points per whole currency unit: 1, 0.5, 3/2 (floored).")
@click.option("--fee-bps", "fees", multiple=True, help="N (all types) or TYPE=N, basis points; repeatable.")
@click.pass_context
def merchant_add(ctx: click.Context, merchant_id: str, name: str, program_code: str, earn_rate: str,
                 fees: tuple[str, ...]) -> None:
    """Add a merchant to a program."""
    try:
        num, den = parse_earn_rate(earn_rate)
        schedule = merchants.parse_fees(list(fees))
    except (ValueError, ProvisioningError) as exc:
        fail(str(exc))
    _run(ctx, lambda conn: merchants.add_merchant(conn, merchant_id, name, program_code, num, den, schedule))
    click.echo(f"added merchant {merchant_id} in program {program_code}")


@merchant.command("list")
@click.option("--program", "program_code", default=None)
@JSON
@click.pass_context
def merchant_list(ctx: click.Context, program_code: str | None, as_json: bool) -> None:
    """List merchants."""
    rows = _run(ctx, lambda conn: merchants.list_merchants(conn, program_code))
    emit(rows, as_json, lambda: _table(rows, ["merchant_id", "name", "program", "earn_rate", "fee_bps",
                                              "status", "clearing_points", "clearing_money_minor"]))


@merchant.command("show")
@click.argument("merchant_id")
@JSON
@click.pass_context
def merchant_show(ctx: click.Context, merchant_id: str, as_json: bool) -> None:
    """Show one merchant with its clearing balances."""
    row = _run(ctx, lambda conn: merchants.show_merchant(conn, merchant_id))
    if row is None:
        fail(f"no merchant {merchant_id}")
    emit(row, as_json, lambda: _pairs(row))


def _set_merchant(ctx: click.Context, merchant_id: str, status: str) -> None:
    if not _run(ctx, lambda conn: merchants.set_merchant_status(conn, merchant_id, status)):
        fail(f"no merchant {merchant_id}")
    click.echo(f"merchant {merchant_id} is {status}")


@merchant.command("disable")
@click.argument("merchant_id")
@click.pass_context
def merchant_disable(ctx: click.Context, merchant_id: str) -> None:
    """Disable a merchant: its terminals are declined 03."""
    _set_merchant(ctx, merchant_id, "disabled")


@merchant.command("enable")
@click.argument("merchant_id")
@click.pass_context
def merchant_enable(ctx: click.Context, merchant_id: str) -> None:
    """Enable a merchant again."""
    _set_merchant(ctx, merchant_id, "active")


# ---------------------------------------------------------------- cards


@click.group("card")
def card() -> None:
    """Members' cards: issue, show, block, unblock."""


@card.command("issue")
@click.argument("pan")
@click.option("--expiry", default=None, help="YYMM (default: five years from now).")
@click.option("--name", default=None)
@click.option("--phone", default=None)
@click.pass_context
def card_issue(ctx: click.Context, pan: str, expiry: str | None, name: str | None, phone: str | None) -> None:
    """Issue a card (Luhn-valid, within the platform's BIN ranges)."""
    row = _run(ctx, lambda conn: cards.issue_card(conn, pan, expiry, name, phone))
    click.echo(f"issued card {mask_pan(pan)} (expiry {row['expiry']})")


@card.command("show")
@click.argument("pan")
@JSON
@click.pass_context
def card_show(ctx: click.Context, pan: str, as_json: bool) -> None:
    """Show a card's status and every balance."""
    row = _run(ctx, lambda conn: cards.show_card(conn, pan))
    if row is None:
        fail(f"no card {mask_pan(pan)}")

    def human() -> None:
        balances = row.pop("balances")
        _pairs(row)
        for b in balances:
            click.echo(f"  {b['kind']:14} {b['asset']:12} {b['balance']:>14}  available {b['available']}")

    emit(row, as_json, human)


def _set_card(ctx: click.Context, pan: str, status: str) -> None:
    if not _run(ctx, lambda conn: cards.set_card_status(conn, pan, status)):
        fail(f"no card {mask_pan(pan)}")
    click.echo(f"card {mask_pan(pan)} is {status}")


@card.command("block")
@click.argument("pan")
@click.pass_context
def card_block(ctx: click.Context, pan: str) -> None:
    """Block a card: every transaction on it is declined 62."""
    _set_card(ctx, pan, "blocked")


@card.command("unblock")
@click.argument("pan")
@click.pass_context
def card_unblock(ctx: click.Context, pan: str) -> None:
    """Make a blocked card active again."""
    _set_card(ctx, pan, "active")


# ---------------------------------------------------------------- demo


@click.group("demo")
def demo_group() -> None:
    """Demo data for a first transaction with tools/possim."""


@demo_group.command("seed")
@click.option("--show-pans", is_flag=True, help="Print the demo cards' full PANs (test cards; masked otherwise).")
@JSON
@click.pass_context
def demo_seed(ctx: click.Context, show_pans: bool, as_json: bool) -> None:
    """An alliance and a hosted program, three merchants with terminals, ten cards (one transaction)."""

    async def body(conn: Any) -> list[dict[str, Any]]:
        if await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code = ANY($1)", ["ALLY", "CAFE"]):
            raise ProvisioningError("demo data is already there (program ALLY or CAFE exists)")
        made = await demo.seed(conn)
        rows: list[dict[str, Any]] = []
        for m in demo.DEMO_MERCHANTS:
            # Terminals are the switch's (switch.terminals); no MAC key in the demo.
            await add_terminal(conn, m.terminal_id, m.merchant_id)
            rows.append({"kind": "terminal", "id": m.terminal_id, "merchant": m.merchant_id,
                         "program": m.program, "detail": m.name})
        for pan in made["cards"]:
            rows.append({"kind": "card", "id": pan if show_pans else mask_pan(pan), "merchant": "", "program": "", "detail": "expiry 3012"})
        return rows

    rows = _run(ctx, body)
    emit(rows, as_json, lambda: _table(rows, ["kind", "id", "merchant", "program", "detail"]))


for _group in (program, merchant, card):
    register(_group)
demo_group.name = "demo"
register(demo_group)
