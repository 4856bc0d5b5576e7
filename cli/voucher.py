"""``switchd voucher batch create|sell|list|show|suspend``: points top-up cards (``ledger.loyalty.vouchers``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from cli.audit import audit
from cli.exits import not_found, refuse
from cli.invocation import config, in_transaction, master_key, with_db
from cli.options import DATE, JSON
from cli.output import emit, pairs, table
from ledger.engine import Ledger
from ledger.loyalty import vouchers
from switch.daemon import ledger_settings

LIST_COLUMNS = ["id", "program", "points", "card_count", "price_minor", "expires_on", "status",
                "buyer_merchant_id", "redeemed", "expired"]


@click.group("voucher")
def voucher() -> None:
    """Points top-up cards (vouchers): batches, their sale, their state."""


@voucher.group("batch")
def batch() -> None:
    """Batches of top-up cards: create, sell, list, show, suspend."""


def _master(ctx: click.Context) -> bytes:
    key = master_key(ctx)
    if key is None:
        refuse("vouchers need a master key: set [security] master_key_file or master_key_env")
    return key


@batch.command("create")
@click.option("--program", required=True, help="The program whose points the cards carry.")
@click.option("--points", type=click.IntRange(1, vouchers.POINTS_MAX), required=True, help="Points per card.")
@click.option("--count", type=click.IntRange(1, vouchers.CARDS_PER_BATCH_MAX), required=True, help="Cards.")
@click.option("--price-minor", type=click.IntRange(0, vouchers.PRICE_MAX_MINOR), required=True,
              help="What the buyer pays per card, in minor units of the program's currency.")
@click.option("--expires", "expires_on", type=DATE, required=True, help="The last day a card may be redeemed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory for the file of codes (written once, mode 0600).")
@JSON
@click.pass_context
def batch_create(ctx: click.Context, program: str, points: int, count: int, price_minor: int, expires_on: dt.date,
                 out_dir: Path, as_json: bool) -> None:
    """Create a batch; its secret codes go to a new file for printing, only their hashes are stored."""
    key = _master(ctx)

    async def body(conn: Any) -> vouchers.CreatedBatch:
        made = await vouchers.create_batch(conn, key, program, points, count, price_minor, expires_on, out_dir)
        await audit(conn, "voucher_batch_create", "voucher_batch", str(made.batch_id), None,
                    {"program": program, "points": points, "count": count, "price_minor": price_minor,
                     "expires_on": expires_on.isoformat()})
        return made

    made = in_transaction(ctx, body)
    out = {"batch_id": made.batch_id, "cards": made.count, "codes_file": str(made.path.resolve())}
    emit(out, as_json, lambda: click.echo(
        f"batch {made.batch_id}: {made.count} cards; codes in {made.path.resolve()} (mode 0600, print and delete it)"))


@batch.command("sell")
@click.argument("batch_id", type=click.IntRange(1))
@click.option("--to", "merchant_id", required=True, help="The merchant buying the batch (it owes the price).")
@JSON
@click.pass_context
def batch_sell(ctx: click.Context, batch_id: int, merchant_id: str, as_json: bool) -> None:
    """Record the sale of a batch: one ledger journal, cleared with the buyer's money at end of day."""
    cfg = config(ctx)

    async def body(pool: Any) -> dict[str, Any]:
        async with Ledger(pool, ledger_settings(cfg)) as led:
            row = await vouchers.sell_batch(led, pool, batch_id, merchant_id, "cli")
        async with pool.acquire() as conn:
            await audit(conn, "voucher_batch_sell", "voucher_batch", str(batch_id), None,
                        {"buyer": merchant_id, "journal_id": row["sale_journal_id"]})
        return row

    row = with_db(ctx, body, pool_statement_s=cfg.database.timeout_statement_s)
    emit(row, as_json, lambda: click.echo(
        f"batch {batch_id} sold to {merchant_id}: {row['card_count']} x {row['price_minor']} minor units "
        f"(journal {row['sale_journal_id']})"))


@batch.command("list")
@click.option("--limit", type=click.IntRange(1, vouchers.LIST_LIMIT_MAX), default=50, show_default=True,
              help="Batches at most.")
@JSON
@click.pass_context
def batch_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List batches, newest first."""
    rows = with_db(ctx, lambda conn: vouchers.list_batches(conn, limit))
    emit(rows, as_json, lambda: table(rows, LIST_COLUMNS))


@batch.command("show")
@click.argument("batch_id", type=click.IntRange(1))
@JSON
@click.pass_context
def batch_show(ctx: click.Context, batch_id: int, as_json: bool) -> None:
    """Show one batch with its redeemed and expired cards."""
    row = with_db(ctx, lambda conn: vouchers.show_batch(conn, batch_id))
    if row is None:
        not_found(f"no voucher batch {batch_id}")
    emit(row, as_json, lambda: pairs(row))


@batch.command("suspend")
@click.argument("batch_id", type=click.IntRange(1))
@click.pass_context
def batch_suspend(ctx: click.Context, batch_id: int) -> None:
    """Suspend a batch: its cards are declined (a sold batch's unredeemed cards still expire into breakage)."""
    async def body(conn: Any) -> bool:
        done = await vouchers.suspend_batch(conn, batch_id)
        if done:
            await audit(conn, "voucher_batch_suspend", "voucher_batch", str(batch_id), None, {"status": "suspended"})
        return done

    if not in_transaction(ctx, body):
        not_found(f"no voucher batch {batch_id}")
    click.echo(f"batch {batch_id} suspended")
