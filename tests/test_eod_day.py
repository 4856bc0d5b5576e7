"""A full business day over TCP through the real daemon, then end of day.

Every transaction type across four merchants and two programs; terminal batch
settlement (0500) balanced and unbalanced; ``eod run`` (figures checked
against the test's own model of what it sent), twice (identical files,
nothing posted again); ``recon run``; ``batch show``, ``txn search|show``,
``stats``; and the day's beancount export checked by ``bean-check``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eod_support import (
    CARDS,
    LISTENERS,
    MERCHANTS,
    TERMINALS,
    Day,
    figures_by_merchant,
    full_day,
    provision,
)
from fixtures_daemon import BEAN_CHECK, Daemon, db_run

from ledger import batches


@pytest.fixture(scope="module")
def world(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Day, Path]]:
    d = Daemon(tmp_path_factory.mktemp("eod"), daemon_db, LISTENERS).start()
    day: Day | None = None
    try:
        provision(d)
        day = full_day(d)
        yield d, day, d.workdir / "settlement"
    finally:
        if day is not None:
            day.close()
        assert d.stop() == 0


def _open_date(d: Daemon) -> dt.date:
    async def body(conn: asyncpg.Connection) -> dt.date:
        value: dt.date = await conn.fetchval("SELECT open_date FROM ledger.business_day")
        return value

    return db_run(d.dsn, body)  # type: ignore[no-any-return]


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_batch_settlement_balanced_and_unbalanced(world: tuple[Daemon, Day, Path]) -> None:
    d, day, _ = world
    t1, t2 = TERMINALS["M0001"], TERMINALS["M0002"]
    ok = day.settle(t1, day.batch_totals(t1))
    assert ok["39"] == "00" and ok["60"] == "000001", ok
    assert ok["41"].rstrip() == t1 and "37" in ok
    # The closed batch's transactions can no longer be voided (ledger.batches.in_closed_batch).
    first = next(s for s in day.sent if s.terminal_id == t1)

    async def closed(conn: asyncpg.Connection) -> bool:
        jid = await conn.fetchval("SELECT journal_id FROM loyalty.transactions WHERE rrn=$1 AND journal_id IS NOT NULL",
                                  first.rrn)
        return await batches.in_closed_batch(conn, jid)

    assert db_run(d.dsn, closed)

    cc, ca, dc, da = day.batch_totals(t2)
    bad = day.settle(t2, (cc, ca + 1, dc, da))
    assert bad["39"] == "95", bad
    shown = json.loads(d.cli("batch", "show", t2, "--json").stdout)
    assert shown["open_batch"]["status"] == "open"
    assert shown["open_batch"]["terminal"]["credit_amount"] == ca + 1
    assert shown["host"] == {"credit_count": cc, "credit_amount": ca, "debit_count": dc, "debit_amount": da}
    assert shown["difference"]["credit"] == {"count": 0, "amount": 1}
    # The reversed earn (left out by both sides) is listed as one that may differ.
    assert any(t["type"] == "earn" and not t["counted"] for t in shown["differing"]), shown["differing"]
    good = day.settle(t2, (cc, ca, dc, da), batch_number="000001")
    assert good["39"] == "00", good
    # The next batch starts empty: zero totals balance.
    assert day.settle(t2, (0, 0, 0, 0), batch_number="000002")["39"] == "00"
    assert day.settle(t2, (1, 0, 0, 0), batch_number="000003")["39"] == "95"


def test_eod_run_clears_every_merchant_as_modelled(world: tuple[Daemon, Day, Path]) -> None:
    d, day, out = world
    today = _open_date(d)
    res = d.cli("eod", "run", "--json", "--dir", str(out), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["business_date"] == today.isoformat() and report["cut_over"] and report["ok"]
    assert _open_date(d) == today + dt.timedelta(days=1)
    summary = json.loads((out / today.isoformat() / "summary.json").read_text())
    got = figures_by_merchant(summary)
    assert set(got) == set(MERCHANTS)
    for mid, (program, *_rest) in MERCHANTS.items():
        want = day.figures[mid]
        g = got[mid]
        assert (g["points_issued"], g["points_redeemed"], g["sv_loaded_minor"], g["sv_spent_minor"],
                g["fees_minor"]) == (want.points_issued, want.points_redeemed, want.sv_loaded_minor,
                                     want.sv_spent_minor, want.fees_minor), mid
        assert g["net_minor"] == want.net_minor(program), mid
    assert summary["totals"]["CNY"]["net_minor"] == sum(day.figures[m].net_minor(MERCHANTS[m][0]) for m in MERCHANTS)
    # Alliance matrix: a member's redemption attributed to the merchants that issued their points.
    mx = {(r["issuer_id"], r["redeemer_id"]): r["points"] for r in summary["alliance_matrix"]}
    assert sum(v for (_, b), v in mx.items() if b == "M0004") == 60
    assert mx.get(("M0002", "M0004")) == 60  # card 6's only points came from M0002
    # Every file's digest is in the summary.
    digests = _digests(out / today.isoformat())
    for name, sha in summary["files"].items():
        assert digests[name] == sha

    # Clearing accounts now hold nothing of the day; the nets sit on payable/receivable.
    async def balances(conn: asyncpg.Connection) -> list[Any]:
        return list(await conn.fetch(
            "SELECT a.owner_id, a.purpose, a.posted FROM ledger.accounts a WHERE a.owner_kind='merchant' "
            "AND a.purpose IN ('clearing', 'settlement_payable', 'settlement_receivable') AND a.posted <> 0"))

    rows = db_run(d.dsn, balances)
    assert all(r["purpose"] != "clearing" for r in rows), rows
    settled = {r["owner_id"]: r["posted"] for r in rows}
    for mid, (program, *_rest) in MERCHANTS.items():
        assert settled.get(mid, 0) == day.figures[mid].net_minor(program), mid

    # Twice: nothing posted, byte-identical files.
    again = d.cli("eod", "run", "--date", today.isoformat(), "--json", "--dir", str(out), check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    rep2 = json.loads(again.stdout)
    assert not rep2["cut_over"] and rep2["clearing"]["journals_posted"] == 0
    assert not rep2["clearing"]["computed_now"]
    assert _digests(out / today.isoformat()) == digests

    recon = d.cli("recon", "run", "--date", today.isoformat(), "--json", check=False)
    assert recon.returncode == 0, recon.stdout
    assert json.loads(recon.stdout)["cleared"]

    # The accountants' export of the day passes bean-check.
    bean = d.workdir / "day.beancount"
    d.cli("ledger", "export", "--date", today.isoformat(), "--format", "beancount", "--out", str(bean))
    checked = subprocess.run([BEAN_CHECK, str(bean)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_search_show_and_stats(world: tuple[Daemon, Day, Path]) -> None:
    d, day, _ = world
    found = json.loads(d.cli("txn", "search", "--pan", CARDS[0], "--type", "earn", "--json").stdout)
    assert found["count"] == 3  # M0001 x2, M0003
    assert all(t["pan"] == CARDS[0][:6] + "******" + CARDS[0][-4:] for t in found["transactions"])
    assert CARDS[0] not in json.dumps(found)
    declined = json.loads(d.cli("txn", "search", "--response-code", "51", "--json").stdout)
    assert [t["merchant_id"] for t in declined["transactions"]] == ["M0004"]
    refused = json.loads(d.cli("txn", "show", declined["transactions"][0]["rrn"], "--json").stdout)
    assert refused["records"][0]["response"]["39"] == "51" and refused["records"][0]["legs"] == []
    page = json.loads(d.cli("txn", "search", "--merchant", "M0001", "--limit", "2", "--json").stdout)
    assert page["count"] == 2 and page["next_before_id"] is not None
    rest = json.loads(d.cli("txn", "search", "--merchant", "M0001", "--before-id", str(page["next_before_id"]),
                            "--amount-min", "1", "--json").stdout)
    assert all(t["id"] < page["next_before_id"] for t in rest["transactions"])

    first = day.sent[0]
    shown = json.loads(d.cli("txn", "show", first.rrn, "--json").stdout)
    rec = shown["records"][0]
    assert rec["txn_type"] == "earn" and len(rec["legs"]) == 4
    assert rec["response"]["39"] == "00" and rec["response"]["37"] == first.rrn
    assert CARDS[0] not in json.dumps(shown)
    assert d.cli("txn", "show", "999999999999", check=False).returncode == 4  # not found (cli.exits)

    async def first_day(conn: asyncpg.Connection) -> dt.date:
        value: dt.date = await conn.fetchval("SELECT min(business_date) FROM loyalty.transactions")
        return value

    when = db_run(d.dsn, first_day).isoformat()
    st = json.loads(d.cli("stats", "--date", when, "--by", "merchant", "--json").stdout)
    groups = {g["grp"]: g for g in st["groups"]}
    assert groups["M0004"]["declined"] == 1 and groups["M0004"]["approval_rate_bps"] == 7500
    assert st["active_members"] == 6 and st["new_cards"] == 10
    by_type = json.loads(d.cli("stats", "--date", when, "--by", "type", "--json").stdout)
    assert {g["grp"] for g in by_type["groups"]} >= {"earn", "redeem", "sv_purchase", "topup", "load", "void",
                                                     "refund", "lottery", "reversal", "inquiry"}
