"""``switchd demo seed``: demo data for a first transaction with tools/possim, and the portal's demo users."""

from __future__ import annotations

from typing import Any

import click

from cli.audit import audit
from cli.invocation import in_transaction
from cli.options import JSON
from cli.output import emit, table
from ledger.loyalty import demo as demo_data
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rules import mask_pan
from portal import demo as portal_demo
from switch.terminals import add_terminal


@click.group("demo")
def demo() -> None:
    """Demo data for a first transaction with tools/possim."""


@demo.command("seed")
@click.option("--show-pans", is_flag=True, help="Print the demo cards' full PANs (test cards; masked otherwise).")
@JSON
@click.pass_context
def demo_seed(ctx: click.Context, show_pans: bool, as_json: bool) -> None:
    """An alliance and a hosted program, three merchants with terminals, ten cards and the portal's demo
    users, one per role, all with the password switchd-demo (one transaction)."""

    async def body(conn: Any) -> list[dict[str, Any]]:
        if await conn.fetchval("SELECT 1 FROM loyalty.programs WHERE code = ANY($1)", ["ALLY", "CAFE"]):
            raise ProvisioningError("demo data is already there (program ALLY or CAFE exists)")
        made = await demo_data.seed(conn)
        rows: list[dict[str, Any]] = []
        for m in demo_data.DEMO_MERCHANTS:
            # Terminals are the switch's (switch.terminals); no MAC key in the demo.
            await add_terminal(conn, m.terminal_id, m.merchant_id)
            rows.append({"kind": "terminal", "id": m.terminal_id, "merchant": m.merchant_id,
                         "program": m.program, "detail": m.name})
        for pan in made["cards"]:
            rows.append({"kind": "card", "id": pan if show_pans else mask_pan(pan), "merchant": "",
                         "program": "", "detail": "expiry 3012"})
        await portal_demo.seed_users(conn)
        for user in portal_demo.DEMO_USERS:
            rows.append({"kind": "portal user", "id": user.login, "merchant": user.merchant_id or "",
                         "program": "", "detail": f"{user.role}, password {portal_demo.DEMO_PASSWORD}"})
        await audit(conn, "demo_seed", "demo", "demo", None,
                    {"programs": sorted({m.program for m in demo_data.DEMO_MERCHANTS}),
                     "merchants": [m.merchant_id for m in demo_data.DEMO_MERCHANTS], "cards": len(made["cards"]),
                     "portal_users": [u.login for u in portal_demo.DEMO_USERS]})
        return rows

    rows = in_transaction(ctx, body)
    emit(rows, as_json, lambda: table(rows, ["kind", "id", "merchant", "program", "detail"]))


@demo.command("logins")
@JSON
def demo_logins(as_json: bool) -> None:
    """The portal's demo logins that `demo seed` creates: one per role, two members, one password."""
    rows = [{"login": u.login, "role": u.role, "merchant": u.merchant_id or "", "password": portal_demo.DEMO_PASSWORD}
            for u in portal_demo.DEMO_USERS]
    # Members log in at /member with a card number (shown masked here: `demo seed --show-pans`
    # prints it whole) or their phone.
    rows += [{"login": m.phone, "role": "member", "merchant": "", "password": portal_demo.DEMO_PASSWORD}
             for m in portal_demo.DEMO_MEMBERS]
    emit(rows, as_json, lambda: table(rows, ["login", "role", "merchant", "password"]))
