"""Stored-value pre-authorisation over real TCP through a real daemon (specs/HOST-INTERFACE.md §6.1).

0100 holds, 0200/0220 completions capture (in part) and release the rest, 0400 of the 0100
releases, an expired hold releases (a time jump: the hold's expiry moved into the past, then the
engine's sweep), retransmissions post nothing; the 0500 totals and the books count the capture
as a stored-value purchase, and reconciliation passes.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
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
from ledger_support import ledger_settings

from ledger import clearing, reconcile
from ledger.audit import check_books
from ledger.engine import Ledger
from ledger.loyalty.preauth import DEFAULT_SETTINGS, PreauthSettings
from switch.config import PREAUTH_SCHEMA

TID, MID = "TPRE0001", "MPRE1"
CARD = "6212345000000000"
CARD_2 = "6212345000000018"
MAC = ("cmac-aes", CMAC_KEY_HEX)


@pytest.fixture(scope="module")
def pre(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("pre"), daemon_db, [POS_LISTENER],
               extra={"preauth": {"hold_timeout_default_s": 600, "hold_timeout_max_s": 7200}}).start()
    try:
        d.cli("program", "add", "SVP", "--name", "Stored value", "--kind", "alliance",
              "--issue-price-minor", "5", "--redeem-value-minor", "4")
        d.cli("merchant", "add", MID, "--name", "Fuel", "--program", "SVP", "--earn-rate", "1",
              "--fee-bps", "100")
        d.cli("terminal", "add", TID, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
        for pan in (CARD, CARD_2):
            d.cli("card", "issue", pan, "--expiry", "3012")
        yield d
    finally:
        assert d.stop() == 0


def _terminal(d: Daemon) -> Terminal:
    t = Terminal(d.ports["pos"], "nac2", "pos")
    t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": TID.ljust(8), "70": "001"})
    return t


def _call(t: Terminal, fields: dict[str, str]) -> dict[str, str]:
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    assert check_mac(raw, "pos", *MAC)
    return decode(raw, "pos")


def _req(mti: str, pc: str, amount: int, pan: str = CARD, **extra: str) -> dict[str, str]:
    f = purchase(TID, MID, pan=pan, amount=amount, pc=pc)
    f["t"] = mti
    f.update(extra)
    return f


def _names(original: dict[str, str]) -> str:
    """Field 90 naming ``original`` (its MTI, 11 and 7)."""
    return original["t"] + original["11"] + original["7"] + "0" * 22


def _sv(t: Terminal, pan: str = CARD) -> int:
    resp = _call(t, _req("0200", "316000", 0, pan=pan))
    assert resp["39"] == "00", resp
    return balances54(resp["54"])["60:156"]


def _db(d: Daemon, fn: Any) -> Any:
    return db_run(d.dsn, fn)


def _load_and_hold(t: Terminal, load_minor: int, hold_minor: int) -> tuple[int, dict[str, str], dict[str, str]]:
    """Load ``load_minor`` then hold ``hold_minor``: (available before the hold, the 0100, its 0110)."""
    assert _call(t, _req("0200", "210060", load_minor))["39"] == "00"
    before = _sv(t)
    auth = _req("0100", "006000", hold_minor)
    held = _call(t, auth)
    assert held["39"] == "00" and _sv(t) == before - hold_minor, held
    return before, auth, held


def _books_ok(d: Daemon) -> None:
    async def body(conn: asyncpg.Connection) -> list[Any]:
        return await check_books(conn)

    assert _db(d, body) == []


def _hold_state(d: Daemon, preauth_rrn: str) -> str:
    async def body(conn: asyncpg.Connection) -> str:
        return str(await conn.fetchval(
            "SELECT h.state FROM ledger.holds h JOIN loyalty.transactions t ON t.journal_id = h.id "
            "WHERE t.rrn = $1 AND t.txn_type = 'preauth'", preauth_rrn))

    return str(_db(d, body))


def test_the_settings_defaults_are_the_schemas() -> None:
    assert DEFAULT_SETTINGS == PreauthSettings(**{k: v[1] for k, v in PREAUTH_SCHEMA.items()})


def test_hold_then_partial_completion_releases_the_rest(pre: Daemon) -> None:
    with _terminal(pre) as t:
        before, auth, held = _load_and_hold(t, 10_000, 6_000)  # held: no longer available
        assert held["t"] == "0110" and len(held["37"]) == 12 and len(held["38"]) == 6
        assert tlv(held["48"])["HT"] == "600", "the configured default"
        done = _call(t, _req("0200", "006000", 4_500, **{"90": _names(auth)}))
        assert done["t"] == "0210" and done["39"] == "00", done
        assert balances54(done["54"])["60:156"] == before - 4_500
        assert _sv(t) == before - 4_500, "the rest is released"
        assert _hold_state(pre, held["37"]) == "captured"
        # Captured once: another completion of the same 0100 is refused, and posts nothing.
        assert _call(t, _req("0200", "006000", 100, **{"90": _names(auth)}))["39"] == "12"
        # The capture is a stored-value purchase: voidable by its RRN like any other.
        void = _call(t, _req("0200", "026000", 4_500, **{"37": done["37"]}))
        assert void["39"] == "00", void
        assert _sv(t) == before
    _books_ok(pre)


def test_completion_advice_and_its_repeat(pre: Daemon) -> None:
    with _terminal(pre) as t:
        _call(t, _req("0200", "210060", 3_000))
        before = _sv(t)
        auth = _req("0100", "006000", 2_000, **{"48": "HT00599999"})
        held = _call(t, auth)
        assert held["39"] == "00" and tlv(held["48"])["HT"] == "7200", "asked above the maximum: cut"
        advice = _req("0220", "006000", 2_000, **{"90": _names(auth)})
        first = _call(t, advice)
        assert first["t"] == "0230" and first["39"] == "00", first
        repeat = _call(t, {**advice, "t": "0221"})
        assert repeat["t"] == "0230" and repeat["37"] == first["37"] and repeat["38"] == first["38"]
        assert _sv(t) == before - 2_000
    _books_ok(pre)


def test_completion_above_the_hold_is_declined_13_and_the_hold_stays(pre: Daemon) -> None:
    with _terminal(pre) as t:
        _call(t, _req("0200", "210060", 5_000))
        auth = _req("0100", "006000", 1_000)
        held = _call(t, auth)
        assert held["39"] == "00"
        assert _call(t, _req("0200", "006000", 1_001, **{"90": _names(auth)}))["39"] == "13"
        assert _hold_state(pre, held["37"]) == "pending"
        assert _call(t, _req("0200", "006000", 1_000, **{"90": _names(auth)}))["39"] == "00"
        # A completion naming no 0100 that exists: 25; a 0100 above what is there: 51.
        ghost = {**auth, "11": next_stan()}
        assert _call(t, _req("0200", "006000", 10, **{"90": _names(ghost)}))["39"] == "25"
        assert _call(t, _req("0100", "006000", 10**9))["39"] in ("51", "61")
        # Another card cannot complete the hold.
        auth2 = _req("0100", "006000", 500)
        assert _call(t, auth2)["39"] == "00"
        assert _call(t, _req("0200", "006000", 500, pan=CARD_2, **{"90": _names(auth2)}))["39"] == "12"
    _books_ok(pre)


def test_reversal_of_the_hold_releases_it(pre: Daemon) -> None:
    with _terminal(pre) as t:
        before, auth, held = _load_and_hold(t, 2_000, 1_500)
        rev = _req("0400", "006000", 1_500, **{"90": _names(auth)})
        first = _call(t, rev)
        assert first["t"] == "0410" and first["39"] == "00", first
        assert _sv(t) == before and _hold_state(pre, held["37"]) == "voided"
        again = _call(t, rev)
        assert again["39"] == "00" and again["37"] == first["37"], "a retransmission: the same answer"
        # Released: nothing left to complete.
        assert _call(t, _req("0200", "006000", 1_500, **{"90": _names(auth)}))["39"] == "12"
        # A completed pre-authorisation is not reversed through its 0100: its completion is.
        auth2 = _req("0100", "006000", 500)
        assert _call(t, auth2)["39"] == "00"
        done = _req("0200", "006000", 500, **{"90": _names(auth2)})
        assert _call(t, done)["39"] == "00"
        assert _call(t, _req("0400", "006000", 500, **{"90": _names(auth2)}))["39"] == "12"
        assert _call(t, _req("0400", "006000", 500, **{"90": _names(done)}))["39"] == "00"
        assert _sv(t) == before
        # A reversal that came before its 0100: the late 0100 is refused and holds nothing.
        late = _req("0100", "006000", 700)
        assert _call(t, _req("0420", "006000", 700, **{"90": _names(late)}))["39"] == "25"
        assert _call(t, late)["39"] == "05"
        assert _sv(t) == before
    _books_ok(pre)


def test_retransmitted_0100_holds_once(pre: Daemon) -> None:
    with _terminal(pre) as t:
        before, auth, first = _load_and_hold(t, 1_000, 400)
        again = _call(t, auth)
        assert again["39"] == "00"
        assert (again["37"], again["38"], again["48"]) == (first["37"], first["38"], first["48"])
        assert _sv(t) == before - 400, "held once"
        assert _call(t, {**auth, "4": f"{401:012d}"})["39"] == "94", "same key, other content"
        assert _call(t, {**auth, "t": "0100", "3": "000000", "11": next_stan()})["39"] == "40"
        bad48 = _call(t, _req("0100", "006000", 10, **{"48": "HT0031x3"}))
        assert bad48["39"] == "30"
    _books_ok(pre)


def test_an_expired_hold_releases_and_cannot_be_completed(pre: Daemon) -> None:
    with _terminal(pre) as t:
        before, auth, held = _load_and_hold(t, 800, 800)

        async def jump(conn: asyncpg.Connection) -> int:
            # The time jump: the hold's expiry moved into the past (the hold trigger refuses any
            # change but its resolution, so replication mode), then the engine's own sweep.
            await conn.execute("SET session_replication_role = replica")
            await conn.execute(
                "UPDATE ledger.holds SET expires_at = now() - interval '1 second' WHERE id = "
                "(SELECT journal_id FROM loyalty.transactions WHERE rrn = $1 AND txn_type = 'preauth')", held["37"])
            await conn.execute("SET session_replication_role = origin")
            return 0

        _db(pre, jump)
        assert _call(t, _req("0200", "006000", 800, **{"90": _names(auth)}))["39"] == "12", "expired"

        async def sweep(_conn: asyncpg.Connection) -> int:
            pool = await asyncpg.create_pool(pre.dsn, min_size=1, max_size=2)
            led = Ledger(pool, ledger_settings())
            await led.start()
            try:
                return await led.expire_due_holds()
            finally:
                await led.stop()
                await pool.close()

        assert _db(pre, sweep) == 1
        assert _hold_state(pre, held["37"]) == "expired"
        assert _sv(t) == before
        assert _call(t, _req("0400", "006000", 800, **{"90": _names(auth)}))["39"] == "00", "nothing left"
    _books_ok(pre)


def test_batch_totals_clearing_and_reconciliation_count_the_capture_only(pre: Daemon) -> None:
    tid, mid = "TPRE0002", "MPRE2"
    pre.cli("merchant", "add", mid, "--name", "Hotel", "--program", "SVP", "--earn-rate", "1", "--fee-bps", "100")
    pre.cli("terminal", "add", tid, "--merchant", mid, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
    t = Terminal(pre.ports["pos"], "nac2", "pos")
    try:
        t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8), "70": "001"})
        load = {**_req("0200", "210060", 5_000), "41": tid.ljust(8), "42": mid.ljust(15)}
        assert _call(t, load)["39"] == "00"
        auth = {**_req("0100", "006000", 3_000), "41": tid.ljust(8), "42": mid.ljust(15)}
        assert _call(t, auth)["39"] == "00"
        assert _call(t, {**_req("0200", "006000", 1_200, **{"90": _names(auth)}), "41": tid.ljust(8), "42": mid.ljust(15)})["39"] == "00"
        released = {**_req("0100", "006000", 900), "41": tid.ljust(8), "42": mid.ljust(15)}
        assert _call(t, released)["39"] == "00"
        assert _call(t, {**_req("0400", "006000", 900, **{"90": _names(released)}), "41": tid.ljust(8), "42": mid.ljust(15)})["39"] == "00"
        # One credit (the load, 5,000) and one debit (the capture, 1,200): holds move no money.
        settle = {"t": "0500", "3": "920000", "7": utc_stamp(), "11": next_stan(), "41": tid.ljust(8),
                  "42": mid.ljust(15), "60": "000001", "74": f"{1:010d}", "86": f"{5_000:016d}",
                  "76": f"{1:010d}", "88": f"{1_200:016d}"}
        closed = _call(t, settle)
        assert closed["t"] == "0510" and closed["39"] == "00", closed
    finally:
        t.close()

    async def recon(conn: asyncpg.Connection) -> list[str]:
        day = await conn.fetchval("SELECT open_date FROM ledger.business_day")
        assert isinstance(day, dt.date)
        report = await reconcile.run(conn, day)
        # Clearing: one load and one stored-value purchase (the capture) with their fees; the
        # hold and its release are in no figure.
        row = next(r for r in await clearing.compute_figures(conn, day) if r["merchant_id"] == mid)
        figures = {k: row[k] for k in ("load_count", "sv_loaded_minor", "spend_count", "sv_spent_minor",
                                       "fees_minor", "reversal_count", "void_count")}
        assert figures == {"load_count": 1, "sv_loaded_minor": 5_000, "spend_count": 1, "sv_spent_minor": 1_200,
                           "fees_minor": 50 + 12, "reversal_count": 0, "void_count": 0}, figures
        return [f"{p.check}: {p.detail}" for p in report.problems]

    failing = _db(pre, recon)
    assert not failing, failing
    _books_ok(pre)


def test_a_hold_ends_even_when_a_claw_back_took_the_card_below_zero(pre: Daemon) -> None:
    # The reversal of a load is forced (a claw-back): after the rest was spent, it takes the card
    # below zero under its holds. Ending a hold lowers nothing available, so it is never declined
    # for it: a release, and a capture within its hold (the merchant was promised the amount).
    with _terminal(pre) as t:
        start = _sv(t, CARD_2)
        load = _req("0200", "210060", 1_000, pan=CARD_2)
        assert _call(t, load)["39"] == "00"
        auth = _req("0100", "006000", 300, pan=CARD_2)
        auth2 = _req("0100", "006000", 500, pan=CARD_2)
        assert _call(t, auth)["39"] == "00" and _call(t, auth2)["39"] == "00"
        assert _call(t, _req("0200", "006000", start + 200, pan=CARD_2))["39"] == "00"
        assert _sv(t, CARD_2) == 0
        assert _call(t, _req("0400", "210060", 1_000, pan=CARD_2, **{"90": _names(load)}))["39"] == "00"
        assert _sv(t, CARD_2) == -1_000
        released = _call(t, _req("0400", "006000", 300, pan=CARD_2, **{"90": _names(auth)}))
        assert released["39"] == "00", released
        assert _sv(t, CARD_2) == -700
        done = _call(t, _req("0200", "006000", 400, pan=CARD_2, **{"90": _names(auth2)}))
        assert done["39"] == "00", done
        assert _sv(t, CARD_2) == -600 and balances54(done["54"])["60:156"] == -600
        # A debit the member asks for is still refused below zero.
        assert _call(t, _req("0100", "006000", 1, pan=CARD_2))["39"] == "51"
    _books_ok(pre)


def _possim(d: Daemon, *args: str) -> dict[str, str]:
    res = subprocess.run([sys.executable, "-m", "tools.possim", "--port", str(d.ports["pos"]), "--tid", TID,
                          "--mid", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX, "--sign-on", *args],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "MAC ok" in res.stdout, res.stdout
    return dict(re.findall(r"^(\w+) +(.*)$", res.stdout, re.M))


def test_possim_preauthorises_completes_and_releases(pre: Daemon) -> None:
    with _terminal(pre) as t:
        assert _call(t, _req("0200", "210060", 2_000, pan=CARD))["39"] == "00"
        before = _sv(t)
    held = _possim(pre, "--preauth", "--pan", CARD, "--amount", "1000", "--hold-s", "900")
    assert held["t"] == "0110" and held["39"] == "00" and tlv(held["48"])["HT"] == "900", held
    done = _possim(pre, "--complete", f"{held['11']}:{held['7']}", "--advice", "--pan", CARD, "--amount", "700")
    assert done["t"] == "0230" and done["39"] == "00", done
    again = _possim(pre, "--preauth", "--pan", CARD, "--amount", "500")
    released = _possim(pre, "--release", f"{again['11']}:{again['7']}", "--pan", CARD, "--amount", "500")
    assert released["t"] == "0410" and released["39"] == "00", released
    with _terminal(pre) as t:
        assert _sv(t) == before - 700


def test_a_96_held_nothing_and_the_retransmission_holds_once(pre: Daemon) -> None:
    """With the posting function away, the 0100 and the completion are answered 96 (nothing
    posted, nothing kept as the answer); resent unchanged once it is back, each posts once."""

    async def rename(conn: asyncpg.Connection, src: str, dst: str) -> None:
        await conn.execute(f"ALTER FUNCTION ledger.{src} RENAME TO {dst}")

    with _terminal(pre) as t:
        assert _call(t, _req("0200", "210060", 1_000))["39"] == "00"
        before = _sv(t)
        auth = _req("0100", "006000", 600)
        done = _req("0220", "006000", 250, **{"90": _names(auth)})
        _db(pre, lambda c: rename(c, "post_batch", "post_batch_away"))
        try:
            assert _call(t, auth)["39"] == "96"
        finally:
            _db(pre, lambda c: rename(c, "post_batch_away", "post_batch"))
        assert _sv(t) == before, "a 96 held nothing"
        held = _call(t, auth)
        assert held["39"] == "00" and _call(t, auth)["37"] == held["37"]
        assert _sv(t) == before - 600
        _db(pre, lambda c: rename(c, "post_batch", "post_batch_away"))
        try:
            assert _call(t, done)["39"] == "96"
        finally:
            _db(pre, lambda c: rename(c, "post_batch_away", "post_batch"))
        assert _sv(t) == before - 600, "a 96 captured nothing"
        first = _call(t, done)
        assert first["39"] == "00" and _call(t, {**done, "t": "0221"})["37"] == first["37"]
        assert _sv(t) == before - 250
    _books_ok(pre)
