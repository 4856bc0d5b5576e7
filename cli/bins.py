"""``switchd bin add|list|remove``: the card BIN prefixes cards are issued in (``ledger.loyalty.bins``)."""

from __future__ import annotations

from typing import Any

import click

from cli.audit import audit
from cli.invocation import in_transaction
from cli.options import JSON
from cli.output import emit, table
from ledger.loyalty import bins


@click.group("bin")
def bin_group() -> None:
    """Card BIN prefixes: a card is issued only inside one of them."""


@bin_group.command("add")
@click.argument("bin_text", metavar="BIN")
@click.option("--description", default="", help=f"What the BIN is for (at most {bins.DESCRIPTION_CHARS_MAX} "
              "characters).")
@click.pass_context
def bin_add(ctx: click.Context, bin_text: str, description: str) -> None:
    """Add a BIN: a prefix of 4..11 digits, or a range LOW-HIGH (stored as the fewest prefixes
    covering it). A BIN may not overlap one already there."""
    async def body(conn: Any) -> list[str]:
        added = await bins.add_bins(conn, bin_text, description)
        await audit(conn, "bin_add", "bin", ",".join(added), None,
                    {"prefixes": added, "description": description})
        return added

    added = in_transaction(ctx, body)
    click.echo(f"added BIN {', '.join(added)}")


@bin_group.command("list")
@JSON
@click.pass_context
def bin_list(ctx: click.Context, as_json: bool) -> None:
    """List the BIN prefixes."""
    rows = in_transaction(ctx, bins.list_bins)
    emit(rows, as_json, lambda: table(rows, ["prefix", "description"]))


@bin_group.command("remove")
@click.argument("bin_text", metavar="BIN")
@click.pass_context
def bin_remove(ctx: click.Context, bin_text: str) -> None:
    """Remove a BIN prefix (or a range's prefixes, all or none): no new cards in it; issued cards keep
    working."""
    async def body(conn: Any) -> list[str]:
        removed = await bins.remove_bins(conn, bin_text)
        await audit(conn, "bin_remove", "bin", ",".join(removed), {"prefixes": removed}, None)
        return removed

    removed = in_transaction(ctx, body)
    click.echo(f"removed BIN {', '.join(removed)}")
