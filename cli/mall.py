"""``switchd mall orders|sweep``: the points mall's orders from the command line (the work is
``ledger.loyalty.mall``).

``sweep`` does once what the portal's sweeper does every ``[mall] sweep_interval_s``: it
cancels placed orders whose hold is due and finishes orders interrupted while being placed,
for an installation whose portal is not running (say, from cron).
"""

from __future__ import annotations

from typing import Any

import click

from cli.exits import refuse
from cli.invocation import config, with_db
from cli.options import JSON
from cli.output import emit, table
from ledger.engine import Ledger
from ledger.loyalty import mall as ledger_mall
from ledger.loyalty.operations import Loyalty
from switch.daemon import ledger_settings

ORDER_COLUMNS = ["id", "created_at", "merchant_id", "member_id", "good_name", "quantity", "pay", "amount", "status"]


@click.group("mall")
def mall() -> None:
    """The points mall: list orders, sweep those not confirmed in time, check them against the ledger."""


@mall.command("orders")
@click.option("--merchant", "merchant_id", default=None, help="Only this merchant's orders.")
@click.option("--member", "member_id", type=int, default=None, help="Only this member's orders.")
@click.option("--status", type=click.Choice(ledger_mall.STATUSES), default=None, help="Only orders in this state.")
@click.option("--limit", type=click.IntRange(1, ledger_mall.PAGE_SIZE_MAX), default=50, show_default=True,
              help="At most this many, newest first.")
@click.option("--before-id", type=int, default=None, help="The next page: orders older than this id.")
@JSON
@click.pass_context
def mall_orders(ctx: click.Context, merchant_id: str | None, member_id: int | None, status: str | None,
                limit: int, before_id: int | None, as_json: bool) -> None:
    """Orders, newest first (no card numbers: members by id)."""

    async def body(conn: Any) -> list[dict[str, Any]]:
        page = await ledger_mall.list_orders(conn, member_id=member_id, merchant_id=merchant_id, status=status,
                                             after_id=before_id, limit=limit)
        return [{k: o[k] for k in ORDER_COLUMNS} for o in page["orders"]]

    rows = with_db(ctx, body)
    emit(rows, as_json, lambda: table(rows, ORDER_COLUMNS))


@mall.command("sweep")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None,
              help="Orders of each kind at most (default: [mall] sweep_batch_max).")
@JSON
@click.pass_context
def mall_sweep(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """Cancel placed orders whose hold is due (stock given back), finish interrupted ones."""
    cfg = config(ctx)

    async def body(pool: Any) -> int:
        async with Ledger(pool, ledger_settings(cfg)) as ledger:
            orders = ledger_mall.Mall(Loyalty(ledger, pool), pool, cfg.mall)
            return await orders.expire_due(limit or cfg.mall.sweep_batch_max)

    changed = with_db(ctx, body, pool_statement_s=cfg.database.timeout_statement_s)
    emit({"orders_changed": changed}, as_json, lambda: click.echo(f"{changed} orders changed"))


@mall.command("check")
@click.option("--limit", type=click.IntRange(1, 1_000), default=20, show_default=True,
              help="Name at most this many orders.")
@JSON
@click.pass_context
def mall_check(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Every order's row against the ledger (its hold, its capture, its refunds); exit 1 naming those
    that disagree."""

    async def body(conn: Any) -> list[str]:
        return await ledger_mall.check_orders(conn, limit)

    problems = with_db(ctx, body)
    emit({"orders_disagreeing": problems}, as_json,
         lambda: click.echo("\n".join(problems) if problems else "every order agrees with the ledger"))
    if problems:
        refuse(f"{len(problems)} orders disagree with the ledger (run the step again, or switchd mall sweep)")
