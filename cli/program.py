"""``switchd program add|update|list|show|lottery``: points programs (rules in ``ledger.loyalty.programs``)."""

from __future__ import annotations

from typing import Any

import click

from cli.audit import audit, fields
from cli.exits import not_found
from cli.invocation import in_transaction
from cli.options import JSON
from cli.output import emit, pairs, table
from ledger.loyalty import lots, programs

LIST_COLUMNS = ["code", "name", "kind", "currency_asset", "issue_price_minor", "redeem_value_minor",
                "lottery_price_points", "merchants"]


# What the audit log keeps of a program, before and after a change.
AUDITED = ("name", "kind", "currency", "issue_price_minor", "redeem_value_minor", "pin_required_for_redeem",
           "pin_required_for_sv", "txn_max_points", "lottery_price_points", "lottery_prizes", "points_expiry_months",
           "residual_policy", "residual_grace_days")
EXPIRY_MONTHS = click.IntRange(min=1, max=lots.EXPIRY_MONTHS_MAX)


@click.group("program")
def program() -> None:
    """Points programs: add, update, list, show, lottery."""


@program.command("add")
@click.argument("code")
@click.option("--name", required=True, help="Display name, 1..80 characters.")
@click.option("--kind", type=click.Choice(["alliance", "hosted"]), required=True,
              help="alliance: many merchants share the points; hosted: one merchant's own.")
@click.option("--issue-price-minor", type=click.IntRange(min=0, max=programs.BIGINT_MAX), required=True,
              help="What an issuing merchant owes per point, in minor units.")
@click.option("--redeem-value-minor", type=click.IntRange(min=0, max=programs.BIGINT_MAX), required=True,
              help="What a redeeming merchant is paid per point, in minor units.")
@click.option("--currency", default=programs.DEFAULT_CURRENCY, show_default=True, help="ISO 4217 numeric code.")
@click.option("--pin-required-for-redeem", is_flag=True, help="Redemptions must carry the card's PIN.")
@click.option("--pin-for-sv/--no-pin-for-sv", "pin_required_for_sv", default=True, show_default=True,
              help="Stored-value purchases must carry the card's PIN (cards with a PIN).")
@click.option("--max-points", "txn_max_points", type=click.IntRange(min=1, max=programs.BIGINT_MAX),
              default=10_000_000, show_default=True, help="Per-transaction maximum, in points.")
@click.option("--points-expiry-months", type=EXPIRY_MONTHS, default=None,
              help="Points expire this many months after the business day they were credited (default: never).")
@click.pass_context
def program_add(ctx: click.Context, code: str, name: str, kind: str, issue_price_minor: int,
                redeem_value_minor: int, currency: str, pin_required_for_redeem: bool, pin_required_for_sv: bool,
                txn_max_points: int, points_expiry_months: int | None) -> None:
    """Add a program (its points asset is PTS:CODE)."""
    async def body(conn: Any) -> None:
        await programs.add_program(conn, code, name, kind, issue_price_minor, redeem_value_minor, currency,
                                   pin_required_for_redeem, txn_max_points, pin_required_for_sv)
        if points_expiry_months is not None:
            await lots.set_expiry(conn, code, points_expiry_months)
        await audit(conn, "program_add", "program", code, None,
                    fields(await programs.show_program(conn, code), AUDITED))

    in_transaction(ctx, body)
    click.echo(f"added program {code} ({kind}, asset PTS:{code})")


@program.command("update")
@click.argument("code")
@click.option("--points-expiry-months", type=EXPIRY_MONTHS, default=None,
              help="Points expire this many months after the business day they were credited.")
@click.option("--no-points-expiry", is_flag=True, help="Points never expire (their lots are dropped).")
@click.option("--residual-policy", type=click.Choice(lots.RESIDUAL_POLICIES), default=None,
              help="Expired cards' stored value after the grace period: breakage income, or still owed.")
@click.option("--residual-grace-days", type=click.IntRange(min=0, max=lots.RESIDUAL_GRACE_DAYS_MAX), default=None,
              help="Days after a card's expiry month before its residual stored value is moved.")
@click.pass_context
def program_update(ctx: click.Context, code: str, points_expiry_months: int | None, no_points_expiry: bool,
                   residual_policy: str | None, residual_grace_days: int | None) -> None:
    """Change a program's points expiry and residual-value policy."""
    if points_expiry_months is not None and no_points_expiry:
        raise click.UsageError("give --points-expiry-months or --no-points-expiry, not both")

    async def body(conn: Any) -> None:
        before = await programs.show_program(conn, code)
        if before is None:
            not_found(f"no program {code}")
        if points_expiry_months is not None or no_points_expiry:
            await lots.set_expiry(conn, code, points_expiry_months)
        await lots.set_residual_policy(conn, code, residual_policy, residual_grace_days)
        await audit(conn, "program_update", "program", code, fields(before, AUDITED),
                    fields(await programs.show_program(conn, code), AUDITED))

    in_transaction(ctx, body)
    click.echo(f"program {code} updated")


@program.command("list")
@JSON
@click.pass_context
def program_list(ctx: click.Context, as_json: bool) -> None:
    """List programs."""
    rows = in_transaction(ctx, programs.list_programs)
    emit(rows, as_json, lambda: table(rows, LIST_COLUMNS))


@program.command("show")
@click.argument("code")
@JSON
@click.pass_context
def program_show(ctx: click.Context, code: str, as_json: bool) -> None:
    """Show one program with its prize table."""
    row = in_transaction(ctx, lambda conn: programs.show_program(conn, code))
    if row is None:
        not_found(f"no program {code}")

    def human() -> None:
        pairs({k: v for k, v in row.items() if k != "lottery_prizes"})
        if row["lottery_prizes"]:
            click.echo("lottery prizes:")
            table(row["lottery_prizes"], ["code", "points", "weight"])

    emit(row, as_json, human)


@program.command("lottery")
@click.argument("code")
@click.option("--price", "price_points", type=click.IntRange(min=1, max=programs.BIGINT_MAX), required=True,
              help="Draw price in points.")
@click.option("--prize", "prizes", multiple=True, required=True, help="CODE:POINTS:WEIGHT, repeatable.")
@click.pass_context
def program_lottery(ctx: click.Context, code: str, price_points: int, prizes: tuple[str, ...]) -> None:
    """Set a program's lottery: draw price and prize table (replaces the old one)."""
    table_ = [programs.parse_prize(p) for p in prizes]

    async def body(conn: Any) -> None:
        before = await programs.show_program(conn, code)
        if before is None:
            not_found(f"no program {code}")
        await programs.set_lottery(conn, code, price_points, table_)
        await audit(conn, "program_lottery", "program", code, fields(before, AUDITED),
                    fields(await programs.show_program(conn, code), AUDITED))

    in_transaction(ctx, body)
    click.echo(f"program {code}: lottery at {price_points} points, {len(table_)} prizes")
