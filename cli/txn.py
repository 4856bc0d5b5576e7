"""``switchd txn search|show``: transactions (the queries are ``ledger.search``; PANs masked)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cli.exits import not_found, refuse
from cli.invocation import with_db
from cli.options import DATE, JSON
from cli.output import emit, plain, table
from ledger import search
from ledger.loyalty.outcomes import Channel, TxnType
from specs.vocabulary import receipt_key_of
from switch.handlers.responses import reasons_answered

SEARCH_COLUMNS = ["id", "business_date", "rrn", "channel", "terminal_id", "merchant_id", "txn_type", "reason",
                  "amount", "pan"]


@click.group("txn")
def txn() -> None:
    """Transaction search and detail."""


@txn.command("search")
@click.option("--from", "date_from", type=DATE, default=None, help="First business date.")
@click.option("--to", "date_to", type=DATE, default=None, help="Last business date.")
@click.option("--merchant", default=None, help="Merchant id (field 42).")
@click.option("--terminal", default=None, help="Terminal id (field 41).")
@click.option("--pan", default=None, help="Full card number (shown masked).")
@click.option("--rrn", default=None, help="Retrieval reference number (field 37).")
@click.option("--type", "txn_type", type=click.Choice([str(t) for t in TxnType]), default=None,
              help="Transaction type.")
@click.option("--response-code", "response_code", default=None, help="ISO field 39, e.g. 51.")
@click.option("--reason", default=None, help="Domain reason, e.g. insufficient.")
@click.option("--channel", type=click.Choice([str(c) for c in Channel]), default=None,
              help="Where it was taken: a terminal, the web trading seat, ...")
@click.option("--amount-min", type=int, default=None, help="Smallest amount (minor units or points).")
@click.option("--amount-max", type=int, default=None, help="Largest amount (minor units or points).")
@click.option("--limit", type=click.IntRange(1, search.LIMIT_MAX), default=search.LIMIT_DEFAULT, show_default=True,
              help="At most this many transactions per page.")
@click.option("--before-id", type=int, default=None, help="Next page: the last id of the previous one.")
@JSON
@click.pass_context
def txn_search(ctx: click.Context, date_from: dt.date | None, date_to: dt.date | None, merchant: str | None,
               terminal: str | None, pan: str | None, rrn: str | None, txn_type: str | None,
               response_code: str | None, reason: str | None, channel: str | None, amount_min: int | None,
               amount_max: int | None, limit: int, before_id: int | None, as_json: bool) -> None:
    """Search transactions by any combination of criteria, newest first."""
    reasons: tuple[str, ...] | None = None
    if response_code is not None:
        reasons = tuple(str(r) for r in reasons_answered(response_code))
        if not reasons:
            refuse(f"--response-code: no reason answers {response_code!r}")
    if reason is not None:
        reasons = (reason,) if reasons is None else tuple(r for r in reasons if r == reason)
    filters = search.Filters(
        date_from=date_from, date_to=date_to, merchant_id=merchant, terminal_id=terminal, pan=pan, rrn=rrn,
        txn_type=txn_type, reasons=reasons, amount_min=amount_min, amount_max=amount_max, channel=channel,
        before_id=before_id)

    async def body(conn: Any) -> dict[str, Any]:
        return await search.search(conn, filters, limit)

    data = with_db(ctx, body)

    def human() -> None:
        table(data["transactions"], SEARCH_COLUMNS)
        if data["next_before_id"] is not None:
            click.echo(f"more: --before-id {data['next_before_id']}")

    emit(data, as_json, human)


@txn.command("show")
@click.argument("rrn")
@JSON
@click.pass_context
def txn_show(ctx: click.Context, rrn: str, as_json: bool) -> None:
    """One transaction by RRN: the request, every leg, the stored response (PAN masked)."""

    async def body(conn: Any) -> dict[str, Any] | None:
        return await search.show(conn, rrn, response_key=receipt_key_of)

    data = with_db(ctx, body)
    if data is None:
        not_found(f"no transaction with RRN {rrn}")

    def human() -> None:
        for rec in data["records"]:
            click.echo(f"RRN {rrn}: {rec['txn_type']} {rec['reason']} business date {rec['business_date']} "
                       f"journal {plain(rec['journal_id'])}")
            click.echo(f"  request   {plain(rec['request'])}")
            for leg in rec["legs"]:
                click.echo(f"  leg {leg['leg']}: {leg['owner_kind']}:{leg['owner_id']}:{leg['purpose']} "
                           f"{leg['asset']} {leg['amount']:+d} -> {leg['balance_after']}")
            click.echo(f"  response  {plain(rec['response'])}")

    emit(data, as_json, human)
