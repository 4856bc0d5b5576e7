"""Card numbers at rest: sealed, found by a keyed hash, shown masked; never in clear in the database.

A daemon serves real traffic (earn, redeem, a decline, an inquiry), the CLI issues and shows
cards, and then the whole database is dumped with pg_dump: no card number appears in it. Rows
written before numbers were sealed are sealed by `switchd db upgrade` with the master key, and
refused by the daemon until then.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    db_run,
    next_stan,
    purchase,
    utc_stamp,
)

from ledger import db as ledger_db
from ledger import migrate
from ledger.loyalty import card_numbers, cards
from ledger.loyalty.rules import luhn_complete

CARDS = [luhn_complete(f"62123477{n:07d}") for n in range(1, 4)]
TID, MID = "TPAN0001", "MPAN1"
SEALED = 21  # the migration that seals card numbers
SWITCHD = str(Path(sys.executable).with_name("switchd"))


def _db_upgrade(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHD, "db", "upgrade"], capture_output=True, text=True, env=env, timeout=60, check=False)


def _digits_in(text: str, pan: str) -> bool:
    return pan in text or pan[6:] in text  # the whole number, or all but the BIN


def test_vault_binds_each_sealed_number_to_its_row() -> None:
    v = card_numbers.CardVault(bytes(32), bytes(range(32)))
    h1, h2 = v.lookup_hash(CARDS[0]), v.lookup_hash(CARDS[1])
    blob = v.seal(CARDS[0], h1)
    assert v.open(blob, h1) == CARDS[0] and CARDS[0].encode() not in blob
    with pytest.raises(card_numbers.CardVaultError, match="does not open"):
        v.open(blob, h2)  # copied onto another card's row
    assert "keys hidden" in repr(v) and bytes(32).hex() not in repr(v)
    # Another database's keys: another hash for the same number.
    assert card_numbers.CardVault(bytes(32), bytes(32)).lookup_hash(CARDS[0]) != h1


def test_no_card_number_in_a_dump_after_real_traffic(daemon_db: str, tmp_path: Path) -> None:
    d = Daemon(tmp_path, daemon_db, [POS_LISTENER]).start()
    try:
        d.provision("PANP", MID, [TID], CARDS[:2])
        with Terminal(d.ports["pos"], "nac2", "pos") as t:
            t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": TID.ljust(8), "70": "001"})
            mac = ("cmac-aes", CMAC_KEY_HEX)
            for pc, amount, pan in (("000000", 10_000, CARDS[0]), ("006500", 30, CARDS[0]),
                                    ("006500", 10**6, CARDS[1]), ("310000", 0, CARDS[1]),
                                    ("000000", 100, CARDS[2])):  # CARDS[2] is no card: a decline
                t.send(purchase(TID, MID, pan=pan, amount=amount, pc=pc), mac=mac)
                t.recv_raw()
        shown = d.cli("card", "show", CARDS[0], "--json").stdout
        assert CARDS[0][:6] in shown and not _digits_in(shown, CARDS[0])
    finally:
        assert d.stop() == 0
    log = d.log_text()
    assert "pan_masked" in log  # the daemon did log the requests, masked
    dump = subprocess.run([shutil.which("pg_dump") or "pg_dump", "--data-only", daemon_db],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    assert "loyalty.cards" in dump and "loyalty.transactions" in dump and "ledger.receipts" in dump
    for pan in CARDS:
        assert not _digits_in(dump, pan), "a card number is stored in clear"
        assert not _digits_in(log, pan)

    async def rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch("SELECT pan, pan_masked, octet_length(pan_hash) AS h FROM loyalty.cards ORDER BY id")

    found = db_run(daemon_db, rows)
    assert [(r["pan"], r["pan_masked"], r["h"]) for r in found] == [
        (None, f"{p[:6]}******{p[-4:]}", 32) for p in CARDS[:2]]


async def test_numbers_stored_in_clear_are_sealed_by_db_upgrade(empty_db_dsn: str, tmp_path: Path) -> None:
    older = tmp_path / "migrations"
    older.mkdir()
    for m in migrate.discover():
        if m.version < SEALED:
            shutil.copy(m.path, older / m.path.name)
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        await migrate.upgrade(conn, older)
        await conn.execute("INSERT INTO loyalty.members(id, name) VALUES (1, 'Old'), (2, 'Older')")
        await conn.executemany("INSERT INTO loyalty.cards(pan, member_id) VALUES ($1, $2)",
                               [(CARDS[0], 1), (CARDS[1], 2)])
        await migrate.upgrade(conn)
        assert await card_numbers.clear_numbers_left(conn) == 2
        with pytest.raises(card_numbers.CardVaultError, match="2 card number.s. are still stored in clear"):
            await card_numbers.check_ready(conn)
    finally:
        await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHD_")}
    env["SWITCHD_DSN"] = empty_db_dsn
    env["SWITCHD_STATE_DIR"] = str(tmp_path / "state")
    keyless = await asyncio.to_thread(_db_upgrade, env)
    assert keyless.returncode == 1 and "Traceback" not in keyless.stderr
    assert "2 card number(s) are still stored in clear" in keyless.stderr and len(keyless.stderr.splitlines()) == 1
    env["SWITCHD_MASTER_KEY"] = os.environ["SWITCHD_MASTER_KEY"]
    keyed = await asyncio.to_thread(_db_upgrade, env)
    assert keyed.returncode == 0, keyed.stderr
    assert "sealed 2 card number(s)" in keyed.stdout
    again = await asyncio.to_thread(_db_upgrade, env)
    assert again.returncode == 0 and "schema is up to date" in again.stdout
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        await card_numbers.check_ready(conn)
        assert await card_numbers.card_id_by_number(conn, CARDS[1]) is not None
        assert await card_numbers.number_of(conn, int(await card_numbers.card_id_by_number(conn, CARDS[0]) or 0)) \
            == CARDS[0]
        with pytest.raises(Exception, match="already exists"):
            await cards.issue_card(conn, CARDS[0])  # the sealed number is still unique
    finally:
        await conn.close()


def test_keys_init_makes_a_key_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHD_")}
    env["SWITCHD_STATE_DIR"] = str(tmp_path / "state")
    first = subprocess.run([SWITCHD, "keys", "init"], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0 and "wrote a new master key" in first.stdout, first.stderr
    key_file = tmp_path / "state" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text().strip()) == 64
    assert key_file.read_text().strip() not in first.stdout
    before = key_file.read_text()
    second = subprocess.run([SWITCHD, "keys", "init"], capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0 and "kept" in second.stdout and key_file.read_text() == before
