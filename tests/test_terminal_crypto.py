"""Terminal cryptography: PIN blocks, key check values, sign-on key exchange, PIN tries, chip data.

Known answers from published vectors (each cited where it is used); the terminal's side is the
tools' own implementation (tools/_pin.py, tools/_mac.py), never the switch's code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import iso8583
import pytest
from fixtures_daemon import (
    MASTER_KEY_HEX,
    PAN_1,
    Daemon,
    Terminal,
    db_run,
    decode,
    netmgmt,
    never_logged,
    next_stan,
    pad,
    utc_stamp,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import specs
from ledger import keys
from switch import emv, keyexchange, pinblock
from tools import _mac, _pin

PAN_2 = "6212340000000019"  # in the platform's default BIN, Luhn-valid
TMK_TDES_HEX = "0123456789ABCDEFFEDCBA9876543210"
TMK_AES_HEX = "C1D0F8FB4958670DBA40AB1F3752EF0D"
CHIP_DATA_HEX = ("9F2608A1B2C3D4E5F60718" "9F2701" "80" "9F360200" "41" "950500" "00080000" "9A03261207"
                 "5A08" "6212345678901232" "57" "096212345678901232D3")
never_logged(TMK_TDES_HEX, TMK_AES_HEX, "9F2608A1B2C3D4E5F60718", CHIP_DATA_HEX)


# ---------------------------------------------------------------------- known answers


# psec (github.com/knovichikhin/psec), its PIN block tests: ISO 9564 format 0 clear blocks.
@pytest.mark.parametrize("pin,pan,block", [
    ("1234", "5555555551234567", "041261AAAAEDCBA9"),
    ("123456789", "5555555551234567", "091261032D8DCBA9"),
    ("1234567890", "5555555551234567", "0A1261032D82CBA9"),
    ("123456789012", "5555555551234567", "0C1261032D8226A9"),
])
def test_format0_published_vectors(pin: str, pan: str, block: str) -> None:
    assert pinblock.pin_from_format0(bytes.fromhex(block), pan) == pin
    assert _pin.format0_clear(pin, pan).hex().upper() == block
    assert pinblock.clear_format0(pin, pan).hex().upper() == block


# Format 4 (AES): the ep2 eft/pos 2000 Security Specification 8.0.0, §8.4 "PIN Encryption" vector, and
# the vector of psec and of the paysec-pinblock crate (random half of the PIN field all FF).
@pytest.mark.parametrize("key,pan,pin,block", [
    ("C1D0F8FB4958670DBA40AB1F3752EF0D", "432198765432109870", "1234", "CC17F65586BFD0953010226C4FC5B3CA"),
    ("00112233445566778899AABBCCDDEEFF", "1234567890123456789", "1234", "28B41FDDD29B743E93124BD8E32D921E"),
])
def test_format4_published_vectors(key: str, pan: str, pin: str, block: str) -> None:
    assert pinblock.decipher("aes", bytes.fromhex(key), bytes.fromhex(block), pan) == pin
    if block.startswith("28B4"):
        built = _pin.pin_block("aes", bytes.fromhex(key), pin, pan, random_tail=b"\xff" * 8)
        assert built.hex().upper() == block


def test_key_under_tmk_and_check_values_published() -> None:
    # The dspread QPOS SDK demo loads TDES key 0123456789ABCDEFFEDCBA9876543210 enciphered under
    # itself as 1A4D672DCA6CB3351FD1B02B237AF9AE with check value 08D7B4FB629D0885 (3DES of a zero
    # block); ANSI X9.24 check values keep its first 3 bytes.
    tmk = bytes.fromhex(TMK_TDES_HEX)
    assert keyexchange.encipher_key("tdes", tmk, tmk).hex().upper() == "1A4D672DCA6CB3351FD1B02B237AF9AE"
    assert keys.scheme_kcv("tdes", tmk) == "08D7B4" == _pin.kcv("tdes", tmk)
    # AES: AES-CMAC of a zero block, first 3 bytes (X9.24-1; AWS Payment Cryptography's "CMAC"
    # check value), with the CMAC checked against RFC 4493 in tests/test_mac.py.
    aes_key = bytes.fromhex(TMK_AES_HEX)
    assert keys.scheme_kcv("aes", aes_key) == _pin.kcv("aes", aes_key)


@settings(max_examples=60, deadline=None)
@given(scheme=st.sampled_from(keys.KEY_SCHEMES), key=st.binary(min_size=16, max_size=16),
       pin=st.text("0123456789", min_size=4, max_size=12), pan=st.text("0123456789", min_size=13, max_size=19))
def test_terminal_blocks_decipher_to_their_pin(scheme: str, key: bytes, pin: str, pan: str) -> None:
    assert pinblock.decipher(scheme, key, _pin.pin_block(scheme, key, pin, pan), pan) == pin


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(keys.KEY_SCHEMES), block=st.binary(min_size=0, max_size=20),
       pan=st.text("0123456789", min_size=0, max_size=20))
def test_any_block_is_a_pin_or_one_fixed_error(scheme: str, block: bytes, pan: str) -> None:
    try:
        pin = pinblock.decipher(scheme, bytes(16), block, pan)
    except pinblock.PinBlockError as exc:
        assert str(exc) in ("PIN block does not decipher to a PIN",)
    else:
        assert pin.isdigit() and 4 <= len(pin) <= 12


def test_sign_on_field_48_opens_under_the_tmk_only() -> None:
    for scheme, tmk_hex in (("tdes", TMK_TDES_HEX), ("aes", TMK_AES_HEX)):
        tmk = bytes.fromhex(tmk_hex)
        working = keyexchange.generate(scheme)
        pin_key, mac_key = _pin.working_keys(scheme, tmk, keyexchange.field_48(tmk, working))
        assert (pin_key, mac_key) == (working.pin_key, working.mac_key)
        with pytest.raises(ValueError):
            _pin.working_keys(scheme, bytes(16), keyexchange.field_48(tmk, working))
        assert "pin_key" not in repr(working) and working.pin_key.hex() not in repr(working)


# ---------------------------------------------------------------------- chip data


@pytest.mark.parametrize("value,problem", [
    ("9F2609A1B2", "a length runs past the end of the data"),
    ("9F", "a tag runs past the end of the data"),
    ("9F26", "a data object has no length"),
    ("9F2683000001", "a length is not well formed"),
    ("9FFFFFFF0100", "a tag is longer than 3 bytes"),
    ("", "must be 1..255 bytes"),
    ("XYZ0", "not hexadecimal"),
    ("E1" "03" "E1" "01" "00", "holds no data object"),
    ("E1" "04" "9F26" "05" "00", "a length runs past the end of the data"),
])
def test_malformed_chip_data_is_named(value: str, problem: str) -> None:
    assert emv.problem(value) == problem


def test_only_what_a_dispute_needs_is_kept() -> None:
    kept = emv.dispute_data(CHIP_DATA_HEX)
    assert set(kept) == {"9F26", "9F27", "9F36", "95", "9A"}
    assert "5A" not in kept and "57" not in kept


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_fuzzed_chip_data_is_parsed_or_refused(data: bytes) -> None:
    try:
        objects = emv.parse(data.hex())
    except emv.TlvError:
        return
    assert objects and all(tag and len(tag) <= 6 for tag, _v in objects)


# ---------------------------------------------------------------------- over TCP


def _send(t: Terminal, fields: dict[str, str], mac: tuple[str, bytes] | None) -> dict[str, str]:
    """Encode (MACed with the tools' own MAC under ``mac``), send, decode; checks the response's MAC."""
    spec = specs.load(t.spec)
    doc = {k: v for k, v in fields.items()}
    if mac is None:
        raw = bytes(iso8583.encode(doc, spec)[0])
    else:
        where = "128" if any(k.isdigit() and int(k) > 64 for k in doc) else "64"
        doc[where] = "0" * 16
        body = bytes(iso8583.encode(doc, spec)[0])[:-8]
        raw = body + _mac.mac(mac[0], mac[1], body)
    t.send_raw(t.frame(raw))
    answer_raw = t.recv_raw()
    answer = decode(answer_raw, t.spec)
    if mac is not None and answer["t"][:2] != "08" and ("64" in answer or "128" in answer):
        assert _mac.mac(mac[0], mac[1], answer_raw[:-8]) == answer_raw[-8:], "response MAC"
    return answer


class TmkTerminal:
    """A terminal with a master key: signs on, takes its working keys, MACs and enciphers PINs."""

    def __init__(self, port: int, tid: str, scheme: str, tmk_hex: str, mid: str = "MCRYPTO") -> None:
        self.conn = Terminal(port, "nac2", "pos")
        self.tid, self.scheme, self.tmk, self.mid = tid, scheme, bytes.fromhex(tmk_hex), mid
        self.pin_key = self.mac_key = b""

    def sign_on(self) -> dict[str, str]:
        answer = _send(self.conn, netmgmt(self.tid, "001"), None)
        assert answer["39"] == "00", answer
        self.pin_key, self.mac_key = _pin.working_keys(self.scheme, self.tmk, answer["48"])
        never_logged(self.pin_key.hex(), self.mac_key.hex(), answer["48"][5:37])
        return answer

    def request(self, pc: str, amount: int, pan: str = PAN_1, pin: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
        fields = {"t": "0200", "2": pan, "3": pc, "4": f"{amount:012d}", "7": utc_stamp(), "11": next_stan(),
                  "41": pad(self.tid, 8), "42": pad(self.mid, 15)}
        if pc[2:4] != "65":
            fields["49"] = "156"
        if pin is not None:
            block = _pin.pin_block(self.scheme, self.pin_key, pin, pan).hex().upper()
            never_logged(block)
            fields[_pin.PIN_FIELD[self.scheme]] = block
        fields.update(extra or {})
        return _send(self.conn, fields, (_pin.MAC_ALG[self.scheme], self.mac_key) if self.mac_key else None)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def crypto_daemon(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("crypto")
    d = Daemon(workdir, daemon_db, [{"name": "pos", "framing": "nac2", "spec": "pos", "sign_on_required": True}],
               extra={"security": {"unkeyed_terminals": "refuse"}}).start()
    (workdir / "tmk_tdes").write_text(TMK_TDES_HEX + "\n")
    (workdir / "tmk_aes").write_text(TMK_AES_HEX + "\n")
    d.cli("program", "add", "CRYPTO", "--name", "Crypto", "--kind", "alliance", "--issue-price-minor", "5",
          "--redeem-value-minor", "4", "--pin-required-for-redeem")
    d.cli("merchant", "add", "MCRYPTO", "--name", "Crypto merchant", "--program", "CRYPTO", "--earn-rate", "1")
    out = d.cli("terminal", "add", "TDES0001", "--merchant", "MCRYPTO", "--tmk-file", str(workdir / "tmk_tdes"))
    assert "check value 08D7B4" in out.stdout and TMK_TDES_HEX not in out.stdout + out.stderr
    d.cli("terminal", "add", "AES00001", "--merchant", "MCRYPTO", "--tmk-file", str(workdir / "tmk_aes"),
          "--tmk-alg", "aes")
    for pan in (PAN_1, PAN_2):
        d.cli("card", "issue", pan, "--expiry", "3012")
    yield d
    assert d.stop() == 0


def test_sign_on_keys_mac_and_pin_tries(crypto_daemon: Daemon) -> None:
    d = crypto_daemon
    shown = d.cli("terminal", "show", "AES00001", "--json").stdout
    assert keys.scheme_kcv("aes", bytes.fromhex(TMK_AES_HEX)) in shown and TMK_AES_HEX not in shown.upper()
    res = d.cli("card", "pin", "set", PAN_1, stdin_text="4321\n4321\n")
    assert "4321" not in res.stdout + res.stderr
    for scheme, tid in (("aes", "AES00001"), ("tdes", "TDES0001")):
        term = TmkTerminal(d.ports["pos"], tid, scheme, TMK_AES_HEX if scheme == "aes" else TMK_TDES_HEX)
        try:
            assert term.request("000000", 100)["39"] == "58"  # not signed on: no working keys yet
            term.sign_on()
            assert term.request("210060", 1000)["39"] == "00"  # load: no PIN needed
            assert term.request("006000", 10)["39"] == "55"  # the card has a PIN: it is required
            assert term.request("006000", 10, pin="1111")["39"] == "55"
            assert term.request("006000", 10, pin="2222")["39"] == "55"
            assert term.request("006000", 10, pin="3333")["39"] == "75"  # the third wrong one
            assert term.request("006000", 10, pin="4321")["39"] == "75"  # locked, even the right one
            d.cli("card", "pin", "unlock", PAN_1)
            assert term.request("006000", 10, pin="1111")["39"] == "55"
            assert term.request("006000", 10, pin="4321")["39"] == "00"  # right: resets the count
            assert term.request("006000", 10, pin="1111")["39"] == "55"
            assert term.request("006000", 10, pin="4321")["39"] == "00"
            assert term.request("006500", 1, pin="9999")["39"] == "55"  # redemption: this programme asks
            d.cli("card", "pin", "unlock", PAN_1)  # the wrong one above counted
            # A pre-authorisation of stored value is where its PIN is checked (not its completion).
            assert term.request("006000", 10, extra={"t": "0100"})["39"] == "55"
            held = term.request("006000", 10, pin="4321", extra={"t": "0100"})
            assert held["39"] == "00" and held["t"] == "0110", held
            assert term.request("000000", 100)["39"] == "00"  # earn: no PIN asked
            assert term.request("006000", 10, pan=PAN_2)["39"] in ("51", "00")  # no PIN set: not asked
        finally:
            term.close()
    status = d.cli("card", "pin", "show", PAN_1, "--json").stdout
    assert '"failed_tries": 0' in status and "4321" not in status
    # Every PIN decline is recorded, as the other declines are: transaction search finds them.
    # Per terminal: 55 six times for purchases and redemptions, once for the 0100; 75 twice.
    for reason, count in (("pin_incorrect", 14), ("pin_tries_exceeded", 4)):
        found = json.loads(d.cli("txn", "search", "--reason", reason, "--json").stdout)
        rows = found["transactions"]
        assert found["count"] == count and len(rows) == count, (reason, found)
        assert all(row["reason"] == reason and row.get("journal_id") is None for row in rows), rows
    assert {row["txn_type"] for row in json.loads(d.cli("txn", "search", "--reason", "pin_incorrect",
                                                        "--json").stdout)["transactions"]} \
        == {"sv_purchase", "redeem", "preauth"}


def test_possim_signs_on_and_sends_a_pin(crypto_daemon: Daemon) -> None:
    d = crypto_daemon
    d.cli("card", "pin", "set", PAN_1, stdin_text="4321\n4321\n")  # the count of tries starts again
    root = Path(__file__).resolve().parent.parent
    for scheme, tid, tmk in (("tdes", "TDES0001", TMK_TDES_HEX), ("aes", "AES00001", TMK_AES_HEX)):
        # The right PIN reaches the ledger (00, or 51 without stored value); a wrong one is 55.
        for pin, codes in (("4321", ("00", "51")), ("1234", ("55",))):
            res = subprocess.run(
                [sys.executable, "-m", "tools.possim", "--port", str(d.ports["pos"]), "--tid", tid, "--mid",
                 "MCRYPTO", "--sign-on", "--tmk", tmk, "--tmk-alg", scheme, "--mti", "0200", "--proc", "006000",
                 "--pan", PAN_1, "--amount", "1", "--pin", pin],
                cwd=root, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr + res.stdout
            assert "working keys received" in res.stdout and "MAC ok" in res.stdout, res.stdout
            assert any(f"39   {code}" in res.stdout for code in codes), res.stdout
            assert tmk not in res.stdout.upper() and PAN_1 not in res.stdout


def test_rotate_keys_makes_the_terminal_sign_on_again(crypto_daemon: Daemon) -> None:
    d = crypto_daemon
    term = TmkTerminal(d.ports["pos"], "AES00001", "aes", TMK_AES_HEX)
    try:
        term.sign_on()
        first = (term.pin_key, term.mac_key)
        assert term.request("000000", 100)["39"] == "00"
        d.cli("terminal", "rotate-keys", "AES00001")
        deadline = time.monotonic() + 5
        while (code := term.request("000000", 100)["39"]) == "00" and time.monotonic() < deadline:
            time.sleep(0.05)  # the change is announced to the daemon, not waited for
        assert code == "58"
        term.sign_on()
        assert (term.pin_key, term.mac_key) != first
        assert term.request("000000", 100)["39"] == "00"
        changes = db_run(d.dsn, lambda c: c.fetch(
            "SELECT key_kind, changed_by FROM switch.terminal_key_changes WHERE terminal_id = 'AES00001'"))
        assert {r["key_kind"] for r in changes} >= {"tmk", "mac", "pin"}
    finally:
        term.close()


def test_static_terminals_keep_working(crypto_daemon: Daemon) -> None:
    d = crypto_daemon
    d.add_terminal("STATIC01", "MCRYPTO", "x919", TMK_TDES_HEX, signed_on=True)
    t = Terminal(d.ports["pos"], "nac2", "pos")
    try:
        assert _send(t, netmgmt("STATIC01", "001"), None)["39"] == "00"
        fields = {"t": "0200", "2": PAN_2, "3": "000000", "4": "000000000100", "7": utc_stamp(),
                  "11": next_stan(), "41": pad("STATIC01", 8), "42": pad("MCRYPTO", 15), "49": "156"}
        answer = _send(t, fields, ("x919", bytes.fromhex(TMK_TDES_HEX)))
        assert answer["39"] == "00" and "48" in answer
    finally:
        t.close()


def test_chip_data_checked_and_kept_for_disputes(crypto_daemon: Daemon) -> None:
    d = crypto_daemon
    term = TmkTerminal(d.ports["pos"], "TDES0001", "tdes", TMK_TDES_HEX)
    try:
        term.sign_on()
        assert term.request("000000", 100, extra={"55": "9F2609A1B2"})["39"] == "30"
        answer = term.request("000000", 100, extra={"55": CHIP_DATA_HEX})
        assert answer["39"] == "00"
        rows = db_run(d.dsn, lambda c: c.fetch("SELECT tags::text AS tags FROM loyalty.chip_data"))
        assert len(rows) == 1
        assert "9F26" in rows[0]["tags"] and "6212345678901232" not in rows[0]["tags"]
    finally:
        term.close()


def test_workers_reload_their_master_keys_on_sighup(daemon_db: str, tmp_path: Path) -> None:
    """With workers, the supervisor hands SIGHUP to each; nobody stops, and a bad file changes nothing."""
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER_KEY_HEX)
    workdir = tmp_path / "w"
    workdir.mkdir()
    d = Daemon(workdir, daemon_db, [{"name": "pos", "framing": "nac2", "spec": "pos", "sign_on_required": True}],
               workers=2, extra={"security": {"master_key_file": str(key_file)}}).start()
    try:
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while d.log_text().count("master_keys_reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.log_text().count("master_keys_reloaded") == 2
        key_file.write_text("not a key")
        d.signal(signal.SIGHUP)
        while d.log_text().count("master_keys_not_reloaded") < 2 and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        assert d.log_text().count("master_keys_not_reloaded") == 2
        with Terminal(d.ports["pos"], "nac2", "pos") as t:
            assert _send(t, netmgmt("NOSUCH", "301"), None)["39"] == "03"  # still serving
    finally:
        assert d.stop() == 0


def test_master_key_rotation_mid_traffic_loses_no_request(crypto_daemon: Daemon, daemon_db: str,
                                                          tmp_path: Path) -> None:
    """The whole rotation while a terminal transacts: the daemon reloads its key files (SIGHUP),
    seals with the new key and opens either while `keys rewrap` re-seals every row.

    Last in this module: the module's first daemon knows the old key only.
    """
    new_hex = keys.generate_master_key_hex()
    never_logged(new_hex)
    key_file, previous_file = tmp_path / "master.key", tmp_path / "master.key.previous"
    key_file.write_text(MASTER_KEY_HEX)  # the previous file does not exist: no rotation under way
    old, new = bytes.fromhex(MASTER_KEY_HEX), bytes.fromhex(new_hex)
    workdir = tmp_path / "d"
    workdir.mkdir()
    d = Daemon(workdir, daemon_db, [{"name": "pos", "framing": "nac2", "spec": "pos", "sign_on_required": True}],
               extra={"security": {"unkeyed_terminals": "refuse", "master_key_file": str(key_file),
                                   "master_key_previous_file": str(previous_file)}}).start()
    try:
        from ledger.loyalty import pins
        from ledger.terminals import add_terminal

        async def provision(conn: asyncpg.Connection) -> None:
            for i in range(40):
                await add_terminal(conn, f"RW{i:06d}", "MCRYPTO", "cmac-aes", "00" * 16, old)
            await add_terminal(conn, "RWTMK001", "MCRYPTO", master_key=old, tmk_alg="aes",
                               tmk=bytes.fromhex(TMK_AES_HEX))
            card_id = await pins.card_id_of(conn, PAN_2)
            assert card_id is not None
            await pins.set_pin(conn, (old,), card_id, "2468", "test")

        db_run(d.dsn, provision)
        term = TmkTerminal(d.ports["pos"], "RWTMK001", "aes", TMK_AES_HEX)
        term.sign_on()
        answers: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                answers.append(term.request("000000", 100, pan=PAN_2)["39"])
                answers.append(term.request("006000", 1, pan=PAN_2, pin="2468")["39"])

        runner = threading.Thread(target=traffic)
        runner.start()
        try:
            time.sleep(0.3)
            previous_file.write_text(MASTER_KEY_HEX)
            key_file.write_text(new_hex)
            d.signal(signal.SIGHUP)
            time.sleep(0.3)
            out = d.cli("keys", "rewrap", "--new-key-file", str(key_file)).stdout
            time.sleep(0.3)
            previous_file.unlink()
            d.signal(signal.SIGHUP)
            time.sleep(0.3)
        finally:
            stop.set()
            runner.join(timeout=30)
        assert "switch.terminals.mac_key_sealed" in out and new_hex not in out.lower()
        assert len(answers) > 10 and set(answers) <= {"00", "51"}, sorted(set(answers))
        term.sign_on()  # after the rotation, with the new key only
        assert term.request("006000", 1, pan=PAN_2, pin="2468")["39"] in ("00", "51")
        term.close()
        assert "master_keys_reloaded" in d.log_text()

        async def all_new(conn: asyncpg.Connection) -> tuple[int, int]:
            from ledger import sealed

            opened = stale = 0
            for col in sealed.SEALED_COLUMNS:
                rows = await conn.fetch(f"SELECT * FROM {col.table} WHERE {col.blob_column} IS NOT NULL")
                for r in rows:
                    keys.unseal(new, bytes(r[col.blob_column]), col.aad(r))
                    opened += 1
                    try:
                        keys.unseal(old, bytes(r[col.blob_column]), col.aad(r))
                        stale += 1
                    except keys.KeyStoreError:
                        pass
            return opened, stale

        opened, stale = db_run(d.dsn, all_new)
        assert opened >= 43 and stale == 0
        again = d.cli("keys", "rewrap", "--new-key-file", str(key_file)).stdout
        assert " 0 re-sealed" in again and "re-sealed, 0 already" not in again.split("\n")[0]
    finally:
        assert d.stop() == 0


def test_host_interface_examples_hold() -> None:
    """specs/HOST-INTERFACE.md §10.2, §10.3 and example (h), checked with the tools' implementation."""
    doc = (Path(specs.__file__).resolve().parent / "HOST-INTERFACE.md").read_text(encoding="utf-8")
    field_48 = "PK0321FD1B02B237AF9AE1A4D672DCA6CB335PC0067B8358MK0324230EF1CB268495597F4494DD23D8A72MC006EB7A8D"
    assert f"48 = {field_48}" in doc
    pin_key, mac_key = _pin.working_keys("tdes", bytes.fromhex(TMK_TDES_HEX), field_48)
    assert pin_key.hex().upper() == "FEDCBA98765432100123456789ABCDEF"
    assert mac_key.hex().upper() == "89ABCDEF0123456776543210FEDCBA98"
    pan = "6250941234567898"
    assert "`04123DBEDCBA9876`" in doc and _pin.format0_clear("1234", pan).hex().upper() == "04123DBEDCBA9876"
    assert "`0ACD588751CEB769`" in doc
    assert pinblock.decipher("tdes", pin_key, bytes.fromhex("0ACD588751CEB769"), pan) == "1234"
    assert "`DABA266681D97FF9230C853508C4BAB6`" in doc
    aes_block = _pin.pin_block("aes", bytes.fromhex("00112233445566778899AABBCCDDEEFF"), "1234", pan, b"\xff" * 8)
    assert aes_block.hex().upper() == "DABA266681D97FF9230C853508C4BAB6"
    assert _pin.format4_pan_field(pan).hex().upper() == "46250941234567898000000000000000"
