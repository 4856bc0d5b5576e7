"""``switchd card issue|show|block|unblock|pin|residual``: members' cards (rules in ``ledger.loyalty.cards``).

A PAN is printed masked (first 6, last 4) everywhere.
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from cli.audit import audit, fields
from cli.exits import not_found, refuse
from cli.invocation import in_transaction, master_key, previous_master_keys
from cli.options import DATE, JSON
from cli.output import emit, pairs, table
from ledger import business_day as bday
from ledger.loyalty import cards, pins, residual
from ledger.loyalty.rules import mask_pan

# What the audit log keeps of a card (never its PAN, name or phone: the entry names it masked).
AUDITED = ("status", "expiry")


@click.group("card")
def card() -> None:
    """Members' cards: issue, show, block, unblock, residual."""


@card.command("issue")
@click.argument("pan")
@click.option("--expiry", default=None, help="YYMM (default: five years from now).")
@click.option("--name", default=None, help="The member's name (at most 80 characters).")
@click.option("--phone", default=None, help="The member's phone number (a new member's login phone).")
@click.option("--member", "member_id", type=int, default=None,
              help="Issue to this existing member (a further card); default: a new member.")
@click.pass_context
def card_issue(ctx: click.Context, pan: str, expiry: str | None, name: str | None, phone: str | None,
               member_id: int | None) -> None:
    """Issue a card (Luhn-valid, within the platform's BIN ranges: see `switchd bin list`)."""
    async def body(conn: Any) -> dict[str, Any]:
        row = await cards.issue_card(conn, pan, expiry, name, phone, member_id=member_id)
        await audit(conn, "card_issue", "card", mask_pan(pan), None, fields(row, AUDITED))
        return row

    row = in_transaction(ctx, body)
    click.echo(f"issued card {mask_pan(pan)} to member {row['member_id']} (expiry {row['expiry']})")


@card.command("show")
@click.argument("pan")
@JSON
@click.pass_context
def card_show(ctx: click.Context, pan: str, as_json: bool) -> None:
    """Show a card's status and every balance."""
    row = in_transaction(ctx, lambda conn: cards.show_card(conn, pan))
    if row is None:
        not_found(f"no card {mask_pan(pan)}")

    def human() -> None:
        pairs({k: v for k, v in row.items() if k != "balances"})
        if row["balances"]:
            click.echo("balances:")
            table(row["balances"], ["kind", "asset", "program", "balance", "available"])

    emit(row, as_json, human)


def _set_status(ctx: click.Context, pan: str, status: str) -> None:
    async def body(conn: Any) -> bool:
        before = await cards.show_card(conn, pan)
        if before is None or not await cards.set_card_status(conn, pan, status):
            return False
        await audit(conn, f"card_{'block' if status == 'blocked' else 'unblock'}", "card", mask_pan(pan),
                    fields(before, AUDITED), fields(await cards.show_card(conn, pan), AUDITED))
        return True

    if not in_transaction(ctx, body):
        not_found(f"no card {mask_pan(pan)}")
    click.echo(f"card {mask_pan(pan)} is {status}")


@card.command("residual")
@click.option("--date", "day", type=DATE, default=None, help="As of this business date (default: the open day).")
@JSON
@click.pass_context
def card_residual(ctx: click.Context, day: Any, as_json: bool) -> None:
    """Expired cards' residual stored value: moved to breakage, in grace, due, or a liability."""
    async def body(conn: Any) -> list[dict[str, Any]]:
        return await residual.residual_list(conn, day or await bday.open_date(conn))

    rows = in_transaction(ctx, body)
    emit(rows, as_json, lambda: table(rows, ["card_id", "expiry", "program", "residual_policy", "due_on",
                                             "stored_value_minor", "state", "moved_minor", "moved_on"]))


@card.command("block")
@click.argument("pan")
@click.pass_context
def card_block(ctx: click.Context, pan: str) -> None:
    """Block a card: every transaction on it is declined 62."""
    _set_status(ctx, pan, "blocked")


@card.command("unblock")
@click.argument("pan")
@click.pass_context
def card_unblock(ctx: click.Context, pan: str) -> None:
    """Make a blocked card active again."""
    _set_status(ctx, pan, "active")


@card.group("pin")
def card_pin() -> None:
    """A card's PIN: set (with the member present), clear, unlock, show (never the PIN itself)."""


async def _pin_target(conn: Any, pan: str) -> int | None:
    return await pins.card_id_of(conn, pan)


@card_pin.command("set")
@click.argument("pan")
@click.pass_context
def card_pin_set(ctx: click.Context, pan: str) -> None:
    """Set or replace a card's PIN, typed twice by the member (read from the terminal or stdin,
    never from the command line); the count of wrong tries starts again."""
    pin = click.prompt("PIN", hide_input=True, confirmation_prompt=True, err=True)
    try:
        pins.check_pin(pin)
    except pins.PinError as exc:
        refuse(str(exc))
    master = master_key(ctx)
    previous = previous_master_keys(ctx)
    master_keys = (() if master is None else (master,)) + previous

    async def body(conn: Any) -> bool:
        card_id = await _pin_target(conn, pan)
        if card_id is None:
            return False
        await pins.set_pin(conn, master_keys, card_id, pin, f"cli:{getpass.getuser()}"[:pins.SET_BY_LENGTH_MAX])
        await audit(conn, "card_pin_set", "card", mask_pan(pan), None, None)
        return True

    if not in_transaction(ctx, body):
        not_found(f"no card {mask_pan(pan)}")
    click.echo(f"PIN set for card {mask_pan(pan)}")


def _pin_change(ctx: click.Context, pan: str, action: str, change: Any, done: str, absent: str) -> None:
    async def body(conn: Any) -> int:
        card_id = await _pin_target(conn, pan)
        if card_id is None:
            return 0
        if not await change(conn, card_id):
            return 1
        await audit(conn, action, "card", mask_pan(pan), None, None)
        return 2

    outcome = in_transaction(ctx, body)
    if outcome == 0:
        not_found(f"no card {mask_pan(pan)}")
    if outcome == 1:
        refuse(f"card {mask_pan(pan)} {absent}")
    click.echo(f"{done} for card {mask_pan(pan)}")


@card_pin.command("clear")
@click.argument("pan")
@click.pass_context
def card_pin_clear(ctx: click.Context, pan: str) -> None:
    """Remove a card's PIN (it is then asked for none)."""
    _pin_change(ctx, pan, "card_pin_clear", pins.clear_pin, "PIN removed", "has no PIN")


@card_pin.command("unlock")
@click.argument("pan")
@click.pass_context
def card_pin_unlock(ctx: click.Context, pan: str) -> None:
    """Reset a card's count of wrong PIN tries (after 75, tries exceeded)."""
    _pin_change(ctx, pan, "card_pin_unlock", pins.unlock, "PIN tries reset", "has no PIN")


@card_pin.command("show")
@click.argument("pan")
@JSON
@click.pass_context
def card_pin_show(ctx: click.Context, pan: str, as_json: bool) -> None:
    """Whether a card has a PIN, its wrong tries, who set it and when."""
    async def body(conn: Any) -> dict[str, Any] | None:
        card_id = await _pin_target(conn, pan)
        return None if card_id is None else {"card": mask_pan(pan), **await pins.pin_status(conn, card_id)}

    row = in_transaction(ctx, body)
    if row is None:
        not_found(f"no card {mask_pan(pan)}")
    emit(row, as_json, lambda: pairs(row))
