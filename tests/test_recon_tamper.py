"""Reconciliation proves the transaction records against their journals: a test tampers with each
kind of row (as someone with write access to loyalty.transactions could, on a day not yet cleared)
and expects ``records_match_journals`` to name it."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from seat_support import PAN1, PAN2, World, approved, seeded

from ledger import reconcile
from ledger.loyalty.outcomes import Reason, TxnType

TAMPERING = {
    # The example that used to pass: an earn's amount and points changed.
    "amount_and_points": ("UPDATE loyalty.transactions SET amount = amount * 10, points_delta = points_delta * 10 "
                          "WHERE id = $1", "amount points_delta points_delta<>entries"),
    "merchant": ("UPDATE loyalty.transactions SET merchant_id = 'M0002' WHERE id = $1", "merchant_id"),
    "card": ("UPDATE loyalty.transactions SET card_id = card_id + 1 WHERE id = $1", "card_id"),
    "fee": ("UPDATE loyalty.transactions SET fee_minor = 0 WHERE id = $1", "fee_minor fee_minor<>entries"),
    "type": ("UPDATE loyalty.transactions SET txn_type = 'topup' WHERE id = $1", "txn_type"),
    "journal": ("UPDATE loyalty.transactions SET journal_id = journal_id + 100000 WHERE id = $1", "no such journal"),
}


async def _earn(w: World) -> int:
    r = approved(await w.take("earn", PAN1, 2500))
    return int(await w.pool.fetchval("SELECT id FROM loyalty.transactions WHERE rrn = $1", r.rrn))


async def _problems(pool: asyncpg.Pool) -> list[str]:
    report = await reconcile.run(pool, dt.datetime.now(dt.UTC).date())
    return [p.detail for p in report.problems if p.check == "records_match_journals"]


@pytest.mark.parametrize("kind", sorted(TAMPERING))
async def test_a_changed_record_is_named(pool: asyncpg.Pool, kind: str) -> None:
    sql, columns = TAMPERING[kind]
    async with seeded(pool) as w:
        record = await _earn(w)
        await w.take("redeem", PAN1, 5)
        assert await _problems(pool) == []
        await pool.execute(sql, record)
        found = await _problems(pool)
        assert any(f"record_id={record}," in p and f"columns={columns}" in p for p in found), found
        # Put it back, so that the fixture's proof of the books passes.
        await pool.execute("DELETE FROM loyalty.transactions WHERE id = $1", record)
        await pool.execute(
            "INSERT INTO loyalty.transactions(journal_id, idempotency_key, business_date, txn_type, reason, rrn, "
            "stan, terminal_id, merchant_id, card_id, program, amount, currency, points_delta, money_delta_minor, "
            "fee_minor, prize_code, original_journal_id, undo_units, undo_legs, channel, operator_ref) "
            "SELECT j.id, j.idempotency_key, j.business_date, x->>'type', 'approved', x->>'rrn', x->>'stan', "
            "x->>'terminal_id', x->>'merchant_id', (x->>'card_id')::bigint, x->>'program', (x->>'amount')::bigint, "
            "x->>'currency', (x->>'points_delta')::bigint, (x->>'money_delta_minor')::bigint, "
            "(x->>'fee_minor')::bigint, NULL, NULL, NULL, NULL, x->>'channel', x->>'operator_ref' "
            "FROM ledger.journals j, LATERAL (SELECT j.metadata->'txn' AS x) m "
            "WHERE NOT EXISTS (SELECT 1 FROM loyalty.transactions t WHERE t.journal_id = j.id) AND j.metadata ? 'txn'")
        assert await _problems(pool) == []


async def test_a_deleted_record_and_a_decline_that_moved_value_are_named(pool: asyncpg.Pool) -> None:
    async with seeded(pool) as w:
        record = await _earn(w)
        declined = await w.pos(TxnType.REDEEM, PAN2, 1_000_000)
        assert declined.reason is Reason.INSUFFICIENT
        journal = await pool.fetchval("SELECT journal_id FROM loyalty.transactions WHERE id = $1", record)
        row = await pool.fetchrow("DELETE FROM loyalty.transactions WHERE id = $1 RETURNING *", record)
        await pool.execute("UPDATE loyalty.transactions SET points_delta = 500 WHERE journal_id IS NULL "
                           "AND reason = 'insufficient'")
        found = await _problems(pool)
        assert any("problem=journal_without_record" in p and f"journal_id={journal}" in p for p in found), found
        assert any("problem=unposted_record_moved_value" in p for p in found), found
        await pool.execute("UPDATE loyalty.transactions SET points_delta = 0 WHERE journal_id IS NULL")
        cols = list(row.keys())
        await pool.execute(
            f"INSERT INTO loyalty.transactions({', '.join(cols)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))})",
            *row.values())
        assert await _problems(pool) == []
