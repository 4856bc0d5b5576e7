"""Every loyalty transaction and decline over real TCP through a real daemon.

Provisioned with the real CLI; requests MACed (AES-CMAC); responses checked
field by field (37, 38, 39, 48, 54, MAC) and the books checked afterwards
(member balances from `switchd card show`, every asset sums to zero, cached
balances equal their entries).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    balances54,
    check_mac,
    db_run,
    decode,
    next_stan,
    purchase,
    tlv,
    utc_stamp,
)

from ledger.audit import check_books
from ledger.loyalty.rules import luhn_ok

TID, MID = "TFIN0001", "MFIN1"
TID_B = "TFIN0002"  # another terminal of the same merchant
CARD = "6212345000000000"
CARD_POOR = "6212345000000018"
CARD_BLOCKED = "6212345000000026"
CARD_EXPIRED = "6212345000000034"
CARD_UNKNOWN = "6212345000000042"
MAC = ("cmac-aes", CMAC_KEY_HEX)


@pytest.fixture(scope="module")
def fin(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    for pan in (CARD, CARD_POOR, CARD_BLOCKED, CARD_EXPIRED, CARD_UNKNOWN):
        assert luhn_ok(pan), pan
    d = Daemon(tmp_path_factory.mktemp("fin"), daemon_db, [POS_LISTENER]).start()
    try:
        _provision(d)
        yield d
    finally:
        assert d.stop() == 0


def _provision(d: Daemon) -> None:
    """The program, merchant, terminals and cards every test here uses."""
    d.cli("program", "add", "GOLD", "--name", "Gold alliance", "--kind", "alliance",
          "--issue-price-minor", "5", "--redeem-value-minor", "4")
    d.cli("program", "lottery", "GOLD", "--price", "50", "--prize", "JACKPOT:500:1", "--prize", "NONE:0:1")
    d.cli("merchant", "add", MID, "--name", "Fin Books", "--program", "GOLD", "--earn-rate", "1",
          "--fee-bps", "100")
    d.cli("terminal", "add", TID, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
    d.cli("terminal", "add", TID_B, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
    for pan in (CARD, CARD_POOR, CARD_BLOCKED):
        d.cli("card", "issue", pan, "--expiry", "3012")
    d.cli("card", "issue", CARD_EXPIRED, "--expiry", "2001")
    d.cli("card", "block", CARD_BLOCKED)


def _terminal(d: Daemon, tid: str = TID) -> Terminal:
    t = Terminal(d.ports["pos"], "nac2", "pos")
    t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8), "70": "001"})
    return t


def _call(t: Terminal, fields: dict[str, str]) -> dict[str, str]:
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    assert check_mac(raw, "pos", *MAC), "every response to a keyed terminal is MACed"
    return decode(raw, "pos")


def _req(pc: str, amount: int, pan: str = CARD, tid: str = TID, **extra: str) -> dict[str, str]:
    f = purchase(tid, MID, pan=pan, amount=amount, pc=pc)
    f.update(extra)
    return f


def _books_ok(d: Daemon) -> None:
    async def body(conn: asyncpg.Connection) -> list[Any]:
        return await check_books(conn)

    assert db_run(d.dsn, body) == []


def _card_points(d: Daemon, pan: str) -> int:
    shown = json.loads(d.cli("card", "show", pan, "--json").stdout)
    return sum(b["balance"] for b in shown["balances"] if b["kind"] == "points")


def _journals(d: Daemon) -> int:
    async def body(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM ledger.journals"))

    return int(db_run(d.dsn, body))


def _approved(resp: dict[str, str]) -> None:
    assert resp["39"] == "00", resp
    assert len(resp["37"]) == 12 and resp["37"].isdigit()
    assert len(resp["38"]) == 6


def test_earn_redeem_load_spend_topup_inquiry(fin: Daemon) -> None:
    with _terminal(fin) as t:
        earn = _call(t, _req("000000", 10_000))  # 100.00 CNY at 1 point per CNY
        _approved(earn)
        assert tlv(earn["48"])["PE"] == "100" and tlv(earn["48"])["PB"] == "100"
        assert balances54(earn["54"]) == {"65:999": 100}
        for echoed in ("3", "4", "7", "11", "41", "42"):
            assert echoed in earn
        redeem = _call(t, _req("006500", 30))
        _approved(redeem)
        assert tlv(redeem["48"])["PR"] == "30" and balances54(redeem["54"]) == {"65:999": 70}
        assert _call(t, _req("006500", 71))["39"] == "51"
        load = _call(t, _req("210060", 5_000))
        _approved(load)
        assert balances54(load["54"]) == {"60:156": 5_000}
        spend = _call(t, _req("006000", 2_000))
        _approved(spend)
        assert balances54(spend["54"]) == {"60:156": 3_000}
        assert _call(t, _req("006000", 3_001))["39"] == "51"
        topup = _call(t, _req("210065", 20))
        _approved(topup)
        assert balances54(topup["54"]) == {"65:999": 90}
        both = _call(t, _req("310000", 0))
        assert both["39"] == "00" and balances54(both["54"]) == {"65:999": 90, "60:156": 3_000}
        pts = _call(t, _req("316500", 0))
        assert balances54(pts["54"]) == {"65:999": 90}
        sv = _call(t, _req("316000", 0))
        assert balances54(sv["54"]) == {"60:156": 3_000}
    assert _card_points(fin, CARD) == 90
    _books_ok(fin)


def test_void_and_refund(fin: Daemon) -> None:
    with _terminal(fin) as t:
        _call(t, _req("210060", 10_000))
        spend = _call(t, _req("006000", 2_500))
        _approved(spend)
        before = balances54(spend["54"])["60:156"]
        void = _call(t, _req("026000", 2_500, **{"37": spend["37"]}))
        _approved(void)
        assert balances54(void["54"])["60:156"] == before + 2_500
        assert _call(t, _req("026000", 2_500, **{"37": spend["37"]}))["39"] == "12", "voided twice"
        assert _call(t, _req("026500", 2_500, **{"37": spend["37"]}))["39"] == "12", "wrong account type"
        earn = _call(t, _req("000000", 40_000))  # 400 points
        _approved(earn)
        points = balances54(earn["54"])["65:999"]
        refund = _call(t, _req("200000", 10_000, **{"37": earn["37"]}))  # a quarter: claw back 100
        _approved(refund)
        assert balances54(refund["54"])["65:999"] == points - 100
        assert _call(t, _req("200000", 30_001, **{"37": earn["37"]}))["39"] == "61", "refunds exceed the original"
        assert _call(t, _req("020000", 40_000, **{"37": "999999999999"}))["39"] in ("25", "12")
        no_original = _req("020000", 100)
        assert _call(t, no_original)["39"] == "12", "a void needs field 37"
        load = _call(t, _req("210060", 700))
        assert _call(t, _req("206000", 700, **{"37": load["37"]}))["39"] == "12", "loads are not refundable"
    with _terminal(fin, TID_B) as other:
        assert _call(other, _req("020000", 40_000, tid=TID_B, **{"37": earn["37"]}))["39"] == "12", \
            "a void from another terminal"
    _books_ok(fin)


def test_lottery(fin: Daemon) -> None:
    with _terminal(fin) as t:
        _call(t, _req("210065", 200))
        draw = _call(t, _req("906500", 50))
        _approved(draw)
        prize = tlv(draw["48"])["LP"]
        assert prize in ("JACKPOT", "NONE")
        assert _call(t, _req("906500", 49))["39"] in ("13", "12"), "the stake is the draw price"
        assert _call(t, _req("026500", 50, **{"37": draw["37"]}))["39"] == "12", "draws cannot be voided"
    _books_ok(fin)


def test_reversals(fin: Daemon) -> None:
    with _terminal(fin) as t:
        topup = _req("210065", 33)
        resp = _call(t, topup)
        _approved(resp)
        points = balances54(resp["54"])["65:999"]
        rev = {**_req("210065", 33), "t": "0400", "90": "0200" + topup["11"] + topup["7"] + "0" * 22}
        first = _call(t, rev)
        assert first["t"] == "0410" and first["39"] == "00"
        after = _card_points(fin, CARD)
        assert after == points - 33
        n = _journals(fin)
        again = {**rev, "11": next_stan(), "t": "0420"}
        second = _call(t, again)
        assert second["t"] == "0430" and second["39"] == "00"
        assert _journals(fin) == n and _card_points(fin, CARD) == after, "a repeated reversal posts nothing"
        # A repeat advice (0421) of that 0420 is the same message: the same answer, 0430.
        repeat = _call(t, {**again, "t": "0421"})
        assert repeat == second and _journals(fin) == n
        # A reversal whose original never arrived: 25, and the late original is declined.
        late = _req("210065", 44)
        lost = {**_req("210065", 44), "t": "0400", "90": "0200" + late["11"] + late["7"] + "0" * 22}
        assert _call(t, lost)["39"] == "25"
        n = _journals(fin)
        late_resp = _call(t, late)
        assert late_resp["39"] != "00"
        assert _journals(fin) == n, "the late original posts nothing"
        assert _card_points(fin, CARD) == after
        # Reversal of a declined original: 00, nothing posted.
        declined = _req("006500", 10**6)
        assert _call(t, declined)["39"] in ("51", "61")
        n = _journals(fin)
        rd = {**_req("006500", 10**6), "t": "0400", "90": "0200" + declined["11"] + declined["7"] + "0" * 22}
        assert _call(t, rd)["39"] == "00"
        assert _journals(fin) == n
    _books_ok(fin)


def test_card_and_amount_declines(fin: Daemon) -> None:
    with _terminal(fin) as t:
        assert _call(t, _req("000000", 100, pan=CARD_UNKNOWN))["39"] == "14"
        assert _call(t, _req("000000", 100, pan=CARD_BLOCKED))["39"] == "62"
        assert _call(t, _req("000000", 100, pan=CARD_EXPIRED))["39"] == "54"
        assert _call(t, _req("006500", 0))["39"] == "13"
        assert _call(t, _req("210065", 10**11))["39"] == "61"
        assert _call(t, _req("003000", 100))["39"] == "40", "not a processing code we offer"
        assert _call(t, _req("316600", 0))["39"] == "40"
    _books_ok(fin)


def test_retransmission_gets_the_same_answer_and_posts_nothing(fin: Daemon) -> None:
    with _terminal(fin) as t:
        req = _req("000000", 5_000)
        first = _call(t, req)
        _approved(first)
        n = _journals(fin)
        t.send(req, mac=MAC)
        raw = t.recv_raw()
        again = decode(raw, "pos")
        assert again == first
        assert _journals(fin) == n
        changed = {**req, "4": "000000005001"}
        assert _call(t, changed)["39"] == "94"
        assert _journals(fin) == n
    _books_ok(fin)


def test_every_approved_type_retransmitted_is_answered_byte_for_byte(fin: Daemon) -> None:
    # Approvals keep their receipt by reference to the journal: the answer to a retransmission is
    # rebuilt from it (RRN, approval code, balances after), and must be the first answer exactly.
    def twice(t: Terminal, req: dict[str, str]) -> dict[str, str]:
        t.send(req, mac=MAC)
        first = t.recv_raw()
        t.send(req, mac=MAC)
        assert t.recv_raw() == first, req
        resp = decode(first, "pos")
        _approved(resp)
        return resp

    with _terminal(fin) as t:
        twice(t, _req("210065", 400))  # top up points
        twice(t, _req("210060", 9_000))  # load stored value
        earn = twice(t, _req("000000", 3_000))
        twice(t, _req("006500", 7))  # redeem
        sv = twice(t, _req("006000", 1_500))
        twice(t, _req("906500", 50))  # lottery
        twice(t, _req("200000", 1_000, **{"37": earn["37"]}))  # partial refund of the earn
        twice(t, _req("026000", 1_500, **{"37": sv["37"]}))  # void of the stored-value purchase
        topup = _req("210065", 12)
        twice(t, topup)
        n = _journals(fin)
        twice(t, {**_req("210065", 12), "t": "0400", "90": "0200" + topup["11"] + topup["7"] + "0" * 22})
        assert _journals(fin) == n + 1, "one reversal posted, its retransmission nothing"
        inquiry = twice(t, _req("310000", 0))
        assert "54" in inquiry

    async def by_journal(conn: asyncpg.Connection) -> list[Any]:
        return list(await conn.fetch(
            "SELECT r.journal_id FROM ledger.receipts r JOIN ledger.journals j ON j.id = r.journal_id "
            "WHERE r.payload IS NULL AND r.idempotency_key LIKE 'iso:%'"))

    assert len(db_run(fin.dsn, by_journal)) >= 10, "approvals are stored by reference, in the posting's statement"
    _books_ok(fin)


def test_a_retransmission_racing_its_original_gets_the_same_answer(fin: Daemon) -> None:
    # Sent back to back without waiting: the two are decided concurrently (the second reads
    # its context before the first commits), one posts, and the other is answered from it.
    with _terminal(fin) as t:
        earn = _call(t, _req("000000", 4_000))
        _approved(earn)
        void = _req("020000", 4_000, **{"37": earn["37"]})  # decided under the original's lock
        for req in (_req("000000", 2_500), _req("006500", 3), _req("006000", 10), void):
            n = _journals(fin)
            t.send(req, mac=MAC)
            t.send(req, mac=MAC)
            first, second = t.recv_raw(), t.recv_raw()
            assert decode(first, "pos") == decode(second, "pos"), req
            assert first == second, req
            assert decode(first, "pos")["39"] in ("00", "51")
            assert _journals(fin) == n + (decode(first, "pos")["39"] == "00")
    _books_ok(fin)


def test_retransmitted_decline_and_inquiry_are_answered_from_their_receipts(fin: Daemon) -> None:
    # The loyalty handlers recognise a retransmission in their context read (the pipeline
    # does not look first): a decline and an inquiry, which post nothing, replay too.
    with _terminal(fin) as t:
        n = _journals(fin)
        for req in (_req("000000", 100, pan=CARD_UNKNOWN), _req("316500", 0)):
            t.send(req, mac=MAC)
            first = t.recv_raw()
            t.send(req, mac=MAC)
            assert t.recv_raw() == first, "cmac-aes is deterministic: the replay is byte for byte the first"
            changed = {**req, "4": "000000000101"}
            assert _call(t, changed)["39"] == "94"
            t.send(req, mac=MAC)
            assert t.recv_raw() == first, "a 94 does not replace the stored answer"
        assert _journals(fin) == n
    replayed = [e for e in fin.events("request") if e.get("replayed")]
    assert len(replayed) >= 4
    _books_ok(fin)


def test_concurrent_redemptions_never_overspend(fin: Daemon) -> None:
    with _terminal(fin) as t:
        _call(t, _req("000000", 1_000, pan=CARD_POOR))  # 10 points
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with _terminal(fin) as term:
            for _ in range(3):
                code = _call(term, _req("006500", 2, pan=CARD_POOR))["39"]
                with lock:
                    results.append(code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert results.count("00") == 5 and results.count("51") == 7
    assert _card_points(fin, CARD_POOR) == 0
    _books_ok(fin)


def test_closed_batch_cannot_be_voided(fin: Daemon) -> None:
    tid = "TFIN0003"
    fin.cli("terminal", "add", tid, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
    with _terminal(fin, tid) as t:
        earn = _call(t, _req("000000", 1_000, tid=tid))
        _approved(earn)
        # The batch holds one credit of 1,000 (specs/HOST-INTERFACE.md §12): in balance, closed.
        settle = {"t": "0500", "3": "920000", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8),
                  "42": MID.ljust(15), "60": "000001", "74": f"{1:010d}", "86": f"{1_000:016d}",
                  "76": f"{0:010d}", "88": f"{0:016d}"}
        closed = _call(t, settle)
        assert closed["t"] == "0510" and closed["39"] == "00", closed
        void = _call(t, _req("020000", 1_000, tid=tid, **{"37": earn["37"]}))
        assert void["39"] == "12", "a closed batch's transactions can no longer be voided"
        # A refund is still possible.
        _approved(_call(t, _req("200000", 1_000, tid=tid, **{"37": earn["37"]})))
    _books_ok(fin)


def test_system_failure_is_not_kept_as_the_answer(fin: Daemon) -> None:
    """A posting that fails answers 96; once the database recovers, the retransmission posts."""

    async def rename(conn: asyncpg.Connection, src: str, dst: str) -> None:
        await conn.execute(f"ALTER FUNCTION ledger.{src} RENAME TO {dst}")

    with _terminal(fin) as t:
        req = _req("210065", 7)
        db_run(fin.dsn, lambda c: rename(c, "post_batch", "post_batch_away"))
        try:
            assert _call(t, req)["39"] == "96"
        finally:
            db_run(fin.dsn, lambda c: rename(c, "post_batch_away", "post_batch"))
        again = _call(t, req)
        _approved(again)
    _books_ok(fin)


def test_a_terminal_acts_for_its_own_merchant_only(fin: Daemon) -> None:
    fin.cli("merchant", "add", "MFIN2", "--name", "Other shop", "--program", "GOLD", "--earn-rate", "1",
            check=False)
    n = _journals(fin)
    with _terminal(fin) as t:
        # A properly MACed earn from TFIN0001 (merchant MFIN1) naming merchant MFIN2.
        resp = _call(t, {**_req("000000", 5_000), "42": "MFIN2".ljust(15)})
        assert resp["39"] == "03"
    assert _journals(fin) == n
    _books_ok(fin)


def test_reversal_without_field_90_and_no_original_leaves_no_marker(fin: Daemon) -> None:
    with _terminal(fin) as t:
        n = _journals(fin)
        rev = {**_req("210065", 5), "t": "0400"}  # no field 90; no request of ours has this STAN
        assert _call(t, rev)["39"] == "25"
        assert _journals(fin) == n, "no marker under the reversal's own key"
        # With field 90 absent, a reversal finds the original by this terminal's STAN.
        topup = _req("210065", 6)
        _approved(_call(t, topup))
        points = _card_points(fin, CARD)
        # Its own field 7 (a second later): the key (41, 11, 7) must differ from the original's.
        same_stan = {**_req("210065", 6), "t": "0400", "11": topup["11"], "7": utc_stamp(1)}
        assert _call(t, same_stan)["39"] == "00"
        assert _card_points(fin, CARD) == points - 6
    _books_ok(fin)
