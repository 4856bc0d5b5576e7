"""``switchd member show|password|activation``: a member's data and online login from the command line.

A member is named by the number of any of its cards or by the phone it logs in
with. A password is read from a hidden prompt or a file, never from the command
line (it would stay in ps and the shell's history); a password set here must be
changed at the member's next login, and the member's sessions end. An
activation code is printed once and only a keyed hash of it is kept (keyed with
the portal's secret, so the portal that checks it must share it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.audit import audit
from cli.exits import not_found, refuse
from cli.invocation import config, in_transaction
from cli.options import JSON
from cli.output import emit, pairs, table
from cli.portal import portal_secret
from ledger.audit_log import cli_actor
from ledger.loyalty import member_profile
from ledger.loyalty.member_accounts import member_balances
from portal import member_auth
from portal.settings import SettingsError

ACTIVATION_TTL_S_MAX = 90 * 86_400


@click.group("member")
def member() -> None:
    """Members (the people behind the cards): show, set a password, make an activation code."""


async def _member_id(conn: Any, login: str) -> int:
    found = await member_profile.find_member_id(conn, login)
    if found is None:
        not_found("no member has that card number or phone")
    return found


@member.command("show")
@click.argument("login", metavar="CARD_OR_PHONE")
@JSON
@click.pass_context
def member_show(ctx: click.Context, login: str, as_json: bool) -> None:
    """Show a member: profile, login state, cards (masked) and every balance."""

    async def body(conn: Any) -> dict[str, Any]:
        member_id = await _member_id(conn, login)
        found = await member_profile.profile(conn, member_id)
        assert found is not None
        return found | {"cards": await member_profile.member_cards(conn, member_id),
                        "balances": await member_balances(conn, member_id)}

    row = in_transaction(ctx, body)

    def human() -> None:
        pairs({k: v for k, v in row.items() if k not in ("cards", "balances")})
        click.echo("cards:")
        table(row["cards"], ["id", "pan", "status", "expiry"])
        if any(b["purpose"] for b in row["balances"]):
            click.echo("balances:")
            table([b for b in row["balances"] if b["purpose"]],
                  ["pan", "purpose", "program", "currency", "balance", "available"])

    emit(row, as_json, human)


@member.command("password")
@click.argument("login", metavar="CARD_OR_PHONE")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Read the password from this file instead of a hidden prompt.")
@click.pass_context
def member_password(ctx: click.Context, login: str, password_file: str | None) -> None:
    """Give a member a temporary password: it must change it at its next login; its sessions end."""
    if password_file is not None:
        password = Path(password_file).read_text(encoding="utf-8", errors="replace").strip()
    else:
        password = click.prompt("Temporary password", hide_input=True, confirmation_prompt=True)

    async def body(conn: Any) -> int:
        member_id = await _member_id(conn, login)
        await member_auth.set_password(conn, member_id, password, by_self=False)
        await audit(conn, "member_password_reset", "member", str(member_id), None, {"must_change_password": True})
        return member_id

    try:
        member_id = in_transaction(ctx, body)
    except member_auth.MemberAuthError as exc:
        refuse(str(exc))
    click.echo(f"member {member_id}: password set; it must be changed at the next login")


@member.command("activation")
@click.argument("login", metavar="CARD_OR_PHONE")
@click.option("--ttl-s", type=click.IntRange(60, ACTIVATION_TTL_S_MAX), default=member_auth.ACTIVATION_TTL_S_DEFAULT,
              show_default=True, help="How long the code works, in seconds.")
@click.pass_context
def member_activation(ctx: click.Context, login: str, ttl_s: int) -> None:
    """Make a one-time activation code (printed this once; the member's earlier unused codes stop working)."""
    try:
        secret, _source = portal_secret(config(ctx))
    except SettingsError as exc:
        refuse(str(exc))

    async def body(conn: Any) -> tuple[int, str]:
        member_id = await _member_id(conn, login)
        code = await member_auth.new_activation(conn, member_id, cli_actor(), secret, ttl_s)
        await audit(conn, "member_activation", "member", str(member_id), None, {"ttl_s": ttl_s})
        return member_id, code

    member_id, code = in_transaction(ctx, body)
    click.echo(f"member {member_id}: activation code {code} (shown once; valid {ttl_s} s)")
