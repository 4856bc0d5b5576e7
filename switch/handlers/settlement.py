"""Terminal batch settlement (0500 / 0510): compare the terminal's totals with the host's.

Fields: 60 batch number (6 digits), 74 credits count, 86 credits amount, 76
debits count, 88 debits amount (specs/HOST-INTERFACE.md §12). Answer 00 = in
balance, the batch is closed; 95 = out of balance, the batch stays open for
``switchd batch show TID``. The arithmetic lives in :mod:`ledger.batches`;
this handler only translates.

>>> totals_from({"74": "0000000001", "86": "0000000000000100", "76": "0000000000", "88": "0000000000000000"})
Totals(credit_count=1, credit_amount=100, debit_count=0, debit_amount=0)
>>> totals_from({"74": "x"}) is None
True
"""

from __future__ import annotations

import asyncpg

from ledger import batches
from ledger.batches import Totals
from ledger.errors import one_line
from specs.vocabulary import APPROVED, FORMAT_ERROR, RECONCILE_ERROR, SYSTEM_UNAVAILABLE, Fields
from switch.context import RequestContext
from switch.terminals import normalize_id

ACQUIRE_TIMEOUT_S = 5.0


def totals_from(fields: Fields) -> Totals | None:
    """The terminal's totals from fields 74, 86, 76, 88 (None when one is missing or not digits)."""
    try:
        values = [fields[k] for k in ("74", "86", "76", "88")]
    except KeyError:
        return None
    if not all(v.isascii() and v.isdigit() for v in values):
        return None
    return Totals(*(int(v) for v in values))


async def handle(ctx: RequestContext) -> Fields:
    """Settle the terminal's open batch; 00 closes it, 95 leaves it open."""
    f = ctx.fields
    totals = totals_from(f)
    batch_number = f.get("60", "")
    if totals is None or not (len(batch_number) == 6 and batch_number.isascii() and batch_number.isdigit()) or ctx.dedup_key is None:
        return ctx.reply(FORMAT_ERROR)
    # The pipeline has already checked that field 42 is this terminal's merchant.
    terminal_id = normalize_id(f["41"])
    merchant_id = normalize_id(f.get("42", "")) or None
    try:
        async with ctx.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            outcome = await batches.settle(conn, terminal_id, merchant_id, batch_number, totals,
                                           ctx.dedup_key.idempotency_key)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        ctx.log.warning("batch_settlement_failed", terminal_id=terminal_id,
                        error=one_line(exc))
        return ctx.reply(SYSTEM_UNAVAILABLE)
    if not outcome.in_balance:
        ctx.log.info("batch_out_of_balance", terminal_id=terminal_id, batch_number=batch_number,
                     host=outcome.host.as_fields(), terminal=outcome.terminal.as_fields())
    return ctx.reply(APPROVED if outcome.in_balance else RECONCILE_ERROR, **{"60": batch_number})
