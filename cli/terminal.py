"""``switchd terminal add|list|show|disable|enable`` (the table and its rules: ``switch.terminals``).

A MAC key is sealed under the master key before it is stored; no command prints one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.audit import audit, fields
from cli.exits import not_found
from cli.invocation import in_transaction, master_key, with_db
from cli.options import JSON
from cli.output import emit, pairs, table
from ledger import keys
from ledger.terminals import TerminalError, rotate_keys
from switch import mac
from switch.terminals import add_terminal, check_new, list_terminals, set_status, show_terminal

LIST_LIMIT_MAX = 100_000
# What the audit log keeps of a terminal (of its key: only whether there is one).
AUDITED = ("merchant_id", "status", "mac_alg", "mac_key", "tmk_alg")


@click.group("terminal")
def terminal() -> None:
    """Terminals: add, list, show, disable, enable (MAC keys are sealed, never printed)."""


@terminal.command("add")
@click.argument("terminal_id")
@click.option("--merchant", "merchant_id", required=True, help="Merchant id (field 42).")
@click.option("--mac-alg", type=click.Choice(list(mac.ALGORITHMS)), default=None, help="MAC algorithm.")
@click.option("--mac-key", "mac_key_hex", default=None, help="MAC key in hex (sealed under the master key).")
@click.option("--mac-key-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Read the hex MAC key from this file instead (keeps it out of ps and shell history).")
@click.option("--tmk-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Terminal master key (32 hex characters): the terminal gets working keys at each sign-on.")
@click.option("--tmk-alg", type=click.Choice(list(keys.KEY_SCHEMES)), default="tdes", show_default=True,
              help="The master key's scheme: tdes (PIN format 0, x919 MACs) or aes (PIN format 4, cmac-aes).")
@click.pass_context
def terminal_add(ctx: click.Context, terminal_id: str, merchant_id: str, mac_alg: str | None,
                 mac_key_hex: str | None, mac_key_file: str | None, tmk_file: str | None, tmk_alg: str) -> None:
    """Add a terminal (field 41), optionally with a MAC key or a terminal master key."""
    if mac_key_file is not None:
        if mac_key_hex is not None:
            raise click.UsageError("give --mac-key or --mac-key-file, not both")
        mac_key_hex = Path(mac_key_file).read_text(encoding="ascii", errors="replace").strip()
    if tmk_file is not None and (mac_key_hex is not None or mac_alg is not None):
        raise click.UsageError("a terminal with --tmk-file gets its MAC key at sign-on: no --mac-alg or --mac-key")
    tmk: bytes | None = None
    if tmk_file is not None:
        try:
            tmk = keys.parse_key_file(tmk_file, "--tmk-file", keys.SCHEME_KEY_BYTES)
        except keys.KeyStoreError as exc:
            raise click.UsageError(str(exc)) from None
    master = master_key(ctx) if mac_key_hex is not None or tmk is not None else None
    check_new(terminal_id, merchant_id, mac_alg, mac_key_hex, master)  # before touching the database
    if tmk is not None and master is None:
        raise TerminalError("cannot store a terminal master key: no master key configured "
                            "(set [security] master_key_file or the variable named by master_key_env)")

    async def body(conn: Any) -> None:
        await add_terminal(conn, terminal_id, merchant_id, mac_alg, mac_key_hex, master,
                           tmk_alg if tmk is not None else None, tmk)
        await audit(conn, "terminal_add", "terminal", terminal_id, None,
                    fields(await show_terminal(conn, terminal_id), AUDITED), merchant_id)

    in_transaction(ctx, body)
    detail = f", MAC {mac_alg}" if mac_alg else ""
    if tmk is not None:
        detail = f", master key {tmk_alg}, check value {keys.scheme_kcv(tmk_alg, tmk)}"
    click.echo(f"added terminal {terminal_id} (merchant {merchant_id}{detail})")


@terminal.command("list")
@JSON
@click.option("--limit", type=click.IntRange(1, LIST_LIMIT_MAX), default=1000, show_default=True,
              help="At most this many terminals, in id order.")
@click.pass_context
def terminal_list(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List terminals."""

    async def body(conn: Any) -> list[dict[str, Any]]:
        return await list_terminals(conn, limit)

    rows = with_db(ctx, body)
    view = [{**r, "sign_on": "signed-on" if r["signed_on"] else "signed-off"} for r in rows]
    emit(rows, as_json, lambda: table(view, ["terminal_id", "merchant_id", "status", "sign_on", "mac_alg"]))


@terminal.command("show")
@click.argument("terminal_id")
@JSON
@click.pass_context
def terminal_show(ctx: click.Context, terminal_id: str, as_json: bool) -> None:
    """Show one terminal (the key itself is never shown)."""

    master = master_key(ctx)

    async def body(conn: Any) -> dict[str, Any] | None:
        return await show_terminal(conn, terminal_id, master)

    row = with_db(ctx, body)
    if row is None:
        not_found(f"terminal {terminal_id} not found")
    emit(row, as_json, lambda: pairs(row))


def _set_status(ctx: click.Context, terminal_id: str, status: str, done: str) -> None:
    async def body(conn: Any) -> bool:
        before = await show_terminal(conn, terminal_id)
        if before is None or not await set_status(conn, terminal_id, status):
            return False
        await audit(conn, "terminal_enable" if status == "active" else "terminal_disable", "terminal", terminal_id, fields(before, AUDITED),
                    fields(await show_terminal(conn, terminal_id), AUDITED), before["merchant_id"])
        return True

    if not in_transaction(ctx, body):
        not_found(f"terminal {terminal_id} not found")
    click.echo(f"{done} terminal {terminal_id}")


@terminal.command("disable")
@click.argument("terminal_id")
@click.pass_context
def terminal_disable(ctx: click.Context, terminal_id: str) -> None:
    """Disable a terminal: its requests are declined 58 from now on."""
    _set_status(ctx, terminal_id, "disabled", "disabled")


@terminal.command("enable")
@click.argument("terminal_id")
@click.pass_context
def terminal_enable(ctx: click.Context, terminal_id: str) -> None:
    """Re-enable a disabled terminal (it must sign on again where sign-on is required)."""
    _set_status(ctx, terminal_id, "active", "enabled")


@terminal.command("rotate-keys")
@click.argument("terminal_id")
@click.pass_context
def terminal_rotate_keys(ctx: click.Context, terminal_id: str) -> None:
    """Force a terminal with a master key to sign on again for fresh working keys.

    Its working keys are dropped and it is signed off: its next request (other than an 0800) is
    answered 58, and it signs on (0800, 70 = 001) to receive new keys.
    """

    async def body(conn: Any) -> bool:
        before = await show_terminal(conn, terminal_id)
        if before is None or not await rotate_keys(conn, terminal_id):
            return False
        await audit(conn, "terminal_rotate_keys", "terminal", terminal_id, fields(before, AUDITED),
                    fields(await show_terminal(conn, terminal_id), AUDITED), before["merchant_id"])
        return True

    if not in_transaction(ctx, body):
        not_found(f"terminal {terminal_id} not found or has no master key")
    click.echo(f"terminal {terminal_id} signed off; it receives new keys at its next sign-on")
