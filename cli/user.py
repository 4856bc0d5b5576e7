"""``switchd user add|list``: the portal's users from the command line (the first platform admin, say).

A user added here must change the password at first login: whoever typed it is
not the user. The password is read from a hidden prompt or a file, never from
the command line (it would stay in ps and the shell's history).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.audit import audit, fields
from cli.exits import refuse
from cli.invocation import in_transaction
from cli.options import JSON
from cli.output import emit, table
from portal import users
from portal.permissions import Role

LIST_COLUMNS = ["id", "login", "display_name", "role", "merchant_id", "disabled", "must_change_password"]
# What the audit log keeps of a user (never the password or its hash).
AUDITED = ("login", "display_name", "role", "merchant_id", "must_change_password", "disabled")


@click.group("user")
def user() -> None:
    """The portal's users: add, list (disable and reset passwords in the portal)."""


@user.command("add")
@click.argument("login")
@click.option("--name", "display_name", required=True, help="Display name, 1..80 characters.")
@click.option("--role", type=click.Choice([str(r) for r in Role]), required=True, help="The user's role.")
@click.option("--merchant", "merchant_id", default=None, help="The merchant of a merchant_admin or merchant_operator.")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Read the first password from this file instead of a hidden prompt.")
@click.pass_context
def user_add(ctx: click.Context, login: str, display_name: str, role: str, merchant_id: str | None,
             password_file: str | None) -> None:
    """Add a portal user with a first password, to be changed at first login."""
    try:
        users.check_fields(login, display_name, role, merchant_id)
    except users.UserError as exc:
        refuse(str(exc))
    if password_file is not None:
        password = Path(password_file).read_text(encoding="utf-8", errors="replace").strip()
    else:
        password = click.prompt("First password", hide_input=True, confirmation_prompt=True)

    async def body(conn: Any) -> dict[str, Any]:
        made = await users.create_user(conn, login, display_name, password, role, merchant_id,
                                       must_change_password=True)
        await audit(conn, "user_add", "user", str(made["id"]), None, fields(made, AUDITED), merchant_id)
        return made

    try:
        made = in_transaction(ctx, body)
    except users.UserError as exc:
        refuse(str(exc))
    click.echo(f"added portal user {made['login']} ({role}); the password must be changed at first login")


@user.command("list")
@click.option("--merchant", "merchant_id", default=None, help="Only this merchant's users.")
@JSON
@click.pass_context
def user_list(ctx: click.Context, merchant_id: str | None, as_json: bool) -> None:
    """List portal users by id (at most the portal's page bound)."""

    async def body(conn: Any) -> dict[str, Any]:
        return await users.list_users(conn, merchant_id, only_merchant=merchant_id is not None,
                                      limit=users.LIST_LIMIT_MAX)

    rows = in_transaction(ctx, body)["users"]
    emit(rows, as_json, lambda: table(rows, LIST_COLUMNS))
