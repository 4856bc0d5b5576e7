"""``switchd merchant add|list|show|disable|enable`` (rules in ``ledger.loyalty.merchants``)."""

from __future__ import annotations

from typing import Any

import click

from cli.audit import audit, fields
from cli.exits import not_found, refuse
from cli.invocation import in_transaction
from cli.options import JSON
from cli.output import emit, pairs, table
from ledger.loyalty import merchants
from ledger.loyalty.rules import parse_earn_rate

# What the audit log keeps of a merchant, before and after a change.
AUDITED = ("name", "program", "earn_rate", "fee_bps", "status")
LIST_COLUMNS = ["merchant_id", "name", "program", "earn_rate", "fee_bps", "status", "clearing_points",
                "clearing_money_minor"]


@click.group("merchant")
def merchant() -> None:
    """Merchants: add, list, show, disable, enable."""


@merchant.command("add")
@click.argument("merchant_id")
@click.option("--name", required=True, help="Display name.")
@click.option("--program", "program_code", required=True, help="The program the merchant joins.")
@click.option("--earn-rate", required=True, help="Points per whole currency unit: 1, 0.5, 3/2 (floored).")
@click.option("--fee-bps", "fees", multiple=True, help="N (all types) or TYPE=N, basis points; repeatable.")
@click.pass_context
def merchant_add(ctx: click.Context, merchant_id: str, name: str, program_code: str, earn_rate: str,
                 fees: tuple[str, ...]) -> None:
    """Add a merchant to a program."""
    try:
        num, den = parse_earn_rate(earn_rate)
    except ValueError as exc:
        refuse(str(exc))
    schedule = merchants.parse_fees(list(fees))

    async def body(conn: Any) -> None:
        row = await merchants.add_merchant(conn, merchant_id, name, program_code, num, den, schedule)
        await audit(conn, "merchant_add", "merchant", merchant_id, None, fields(row, AUDITED), merchant_id)

    in_transaction(ctx, body)
    click.echo(f"added merchant {merchant_id} in program {program_code}")


@merchant.command("list")
@click.option("--program", "program_code", default=None, help="Only this program's merchants.")
@JSON
@click.pass_context
def merchant_list(ctx: click.Context, program_code: str | None, as_json: bool) -> None:
    """List merchants."""
    rows = in_transaction(ctx, lambda conn: merchants.list_merchants(conn, program_code))
    emit(rows, as_json, lambda: table(rows, LIST_COLUMNS))


@merchant.command("show")
@click.argument("merchant_id")
@JSON
@click.pass_context
def merchant_show(ctx: click.Context, merchant_id: str, as_json: bool) -> None:
    """Show one merchant with its clearing balances."""
    row = in_transaction(ctx, lambda conn: merchants.show_merchant(conn, merchant_id))
    if row is None:
        not_found(f"no merchant {merchant_id}")
    emit(row, as_json, lambda: pairs(row))


def _set_status(ctx: click.Context, merchant_id: str, status: str) -> None:
    async def body(conn: Any) -> bool:
        before = await merchants.show_merchant(conn, merchant_id)
        if before is None or not await merchants.set_merchant_status(conn, merchant_id, status):
            return False
        after = await merchants.show_merchant(conn, merchant_id)
        await audit(conn, f"merchant_{status}", "merchant", merchant_id, fields(before, AUDITED),
                    fields(after, AUDITED), merchant_id)
        return True

    if not in_transaction(ctx, body):
        not_found(f"no merchant {merchant_id}")
    click.echo(f"merchant {merchant_id} is {status}")


@merchant.command("disable")
@click.argument("merchant_id")
@click.pass_context
def merchant_disable(ctx: click.Context, merchant_id: str) -> None:
    """Disable a merchant: its terminals are declined 03."""
    _set_status(ctx, merchant_id, "disabled")


@merchant.command("enable")
@click.argument("merchant_id")
@click.pass_context
def merchant_enable(ctx: click.Context, merchant_id: str) -> None:
    """Enable a merchant again."""
    _set_status(ctx, merchant_id, "active")
