"""In-platform mail at scale: a merchant's broadcast to N members of its program.

On a fresh database with N members (each a card enrolled in the alliance program, each with
an e-mail address): the time to send a broadcast (one row, whatever N), a member's inbox page
and unread count with 20 broadcasts in it, and the background fan-out of one broadcast's
e-mail copies into the outbox (pages of recipients by member id). Nothing is sent by SMTP.

    python bench/mail_broadcast.py [--members 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common
from _common import ADMIN_DSN, ROOT

from ledger import db as ledger_db
from ledger import migrate
from ledger.loyalty import card_numbers, demo
from portal import mail
from portal.mail_sender import MailSender, SmtpSettings
from tools import harness

BROADCASTS = 20
READS = 200
MEMBER_ID_BASE = 1_000_000


async def _members(pool: Any, n: int) -> None:
    """N members, each with one card enrolled in ALLY (a points account) and an e-mail address."""
    await pool.execute("INSERT INTO loyalty.members(id, name, email) SELECT $1 + i, 'm' || i, 'm' || i || '@x.test' "
                       "FROM generate_series(1, $2) i", MEMBER_ID_BASE, n)
    v = await card_numbers.vault(pool)
    sealed = [v.columns("9" + str(i).zfill(15)) for i in range(1, n + 1)]
    await pool.execute("INSERT INTO loyalty.cards(id, pan_hash, pan_sealed, pan_masked, member_id) "
                       "SELECT $1 + i, s.h, s.b, s.m, $1 + i "
                       "FROM unnest($2::bytea[], $3::bytea[], $4::text[]) WITH ORDINALITY AS s(h, b, m, i)",
                       MEMBER_ID_BASE, [c[0] for c in sealed], [c[1] for c in sealed], [c[2] for c in sealed])
    await pool.execute("INSERT INTO ledger.accounts(owner_kind, owner_id, purpose, asset, normal_side, limit_mode) "
                       "SELECT 'card', ($1 + i)::text, 'points', 'PTS:ALLY', 'credit', 'guarded' "
                       "FROM generate_series(1, $2) i", MEMBER_ID_BASE, n)
    await pool.execute("ANALYZE")


async def _ms_each(count: int, fn: Callable[[], Awaitable[Any]]) -> float:
    t = time.perf_counter()
    for _ in range(count):
        await fn()
    return round((time.perf_counter() - t) * 1000 / count, 3)


async def measure(members: int) -> dict[str, Any]:
    name = harness.unique_database_name("switchd_bench_mail")
    dsn = await harness.create_database(ADMIN_DSN, name)
    try:
        pool = await ledger_db.create_pool(dsn, 1, 2)
        try:
            async with pool.acquire() as conn:
                await migrate.upgrade(conn)
                async with conn.transaction():
                    await demo.seed(conn, cards=1)
            t = time.perf_counter()
            await _members(pool, members)
            setup_s = time.perf_counter() - t
            async with pool.acquire() as conn:
                k = iter(range(BROADCASTS))
                send_ms = await _ms_each(BROADCASTS, lambda: mail.send_to_members(
                    conn, "M0001", None, f"Broadcast {next(k)}", "Hello all.", "bench", email_copies=False))
                await mail.send_to_members(conn, "M0001", None, "With copies", "Hello all.", "bench", email_copies=True)
            box = mail.Inbox.member(MEMBER_ID_BASE + members // 2)
            inbox_ms = await _ms_each(READS, lambda: mail.inbox(pool, box))
            unread_ms = await _ms_each(READS, lambda: mail.unread_count(pool, box))
            sender = MailSender(pool, SmtpSettings(host="127.0.0.1"))
            t, added = time.perf_counter(), 0
            while (step := await sender.expand()) > 0:
                added += step
            fanout_s = time.perf_counter() - t
            rows = await pool.fetchval("SELECT count(*) FROM portal.mail_messages")
        finally:
            await pool.close()
    finally:
        await harness.drop_database(ADMIN_DSN, name)
    return {"members": members, "setup_s": round(setup_s, 1), "broadcast_send_ms": send_ms,
            "message_rows": rows, "inbox_page_ms": inbox_ms, "unread_count_ms": unread_ms,
            "email_fanout_recipients": added, "email_fanout_s": round(fanout_s, 2),
            "email_fanout_recipients_per_s": round(added / fanout_s) if fanout_s else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mail_broadcast.json"))
    args = ap.parse_args()
    figures = asyncio.run(measure(args.members))
    figures.update(_common.provenance())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")
    return 0 if figures["message_rows"] == BROADCASTS + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
