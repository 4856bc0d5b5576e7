"""End to end over real sockets against ``switchd serve`` started by the test.

Framings (with and without TPDU), TLS, network management, sign-on rule,
pipelining with out-of-order completion, MAC (both algorithms, both specs),
duplicates across a restart, unknown/disabled terminals, validation failures,
framing abuse (oversize, cut off, slow-loris, idle), the connection cap,
handler timeout, graceful drain, logs without PANs, metrics, systemd notify,
and the terminal CLI.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import signal
import socket
import ssl
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    MIS_LISTENER,
    PAN_1,
    PAN_2,
    POS_LISTENER,
    POS_TPDU_LISTENER,
    X919_KEY_HEX,
    RowLock,
    Terminal,
    ascii4,
    check_mac,
    db_run,
    decode,
    encode,
    nac2,
    netmgmt,
    next_stan,
    purchase,
)
from prometheus_client.parser import text_string_to_metric_families

ECHOED = ("3", "4", "7", "11", "41", "42")
LISTENERS = {"pos": ("nac2", "pos", None), "pos_tpdu": ("nac2", "pos", bytes.fromhex("6000120034")),
             "mis": ("ascii4", "mis", None)}


# A 0200 that passes every switch check reaches the financial handler; these
# tests provision terminals but no loyalty merchant, so the handler answers 03
# (invalid merchant). Reaching it is what they check, not the business outcome.
ROUTED = "03"

def term(d: Any, listener: str, **kw: Any) -> Terminal:
    framing, spec, tpdu = LISTENERS.get(listener, ("nac2", "pos", None))
    return Terminal(d.ports[listener], framing, spec, tpdu, **kw)


def assert_echo(req: dict[str, str], resp: dict[str, str], names: tuple[str, ...] = ECHOED) -> None:
    for name in names:
        if name in req:
            assert resp.get(name) == req[name], f"field {name} not echoed"


@pytest.fixture
def daemon(daemon_db: str, start_daemon: Any) -> Any:
    return start_daemon(daemon_db)


_tid_seq = iter(range(1, 10_000_000))


def new_tid(prefix: str = "T") -> str:
    return f"{prefix}{os.getpid() % 100:02d}{next(_tid_seq):05d}"[:8]


# ---------------------------------------------------------------------- network management and framing


@pytest.mark.parametrize("listener", ["pos", "pos_tpdu", "mis"])
def test_sign_on_echo_sign_off_on_each_framing(daemon: Any, listener: str) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, listener) as t:
        for code in ("001", "301", "002"):
            req = netmgmt(tid, code)
            t.send(req)
            body = t.recv_raw()
            resp = decode(body, t.spec)
            assert resp["t"] == "0810" and resp["39"] == "00"
            assert_echo(req, resp, ("7", "11", "41", "70"))
            assert "64" not in resp and "128" not in resp, "0810 is never MACed"
            if listener == "pos_tpdu":
                assert t.last_tpdu == bytes.fromhex("6000340012"), "TPDU echoed with dest/src swapped"
            if listener == "mis":
                assert body[4:36] == body[4:36].upper(), "MIS bitmaps are upper-case hex"
    shown = json.loads(daemon.cli("terminal", "show", tid, "--json").stdout)
    assert shown["signed_on"] is False and shown["signed_on_at"]


def test_mis_keepalive_and_lower_case_bitmap(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, "mis") as t:
        t.send_raw(b"0000")  # keep-alive: not answered
        msg = encode(netmgmt(tid, "301"), "mis")
        msg = msg[:4] + msg[4:36].lower() + msg[36:]  # decoders accept either case
        t.send_raw(ascii4(msg))
        assert t.recv()["39"] == "00"


def test_sign_on_required_on_pos_not_on_mis(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, "pos") as t:
        req = purchase(tid)
        resp = t.call(req)
        assert resp["t"] == "0210" and resp["39"] == "58"
        assert_echo(req, resp)
        assert t.call(netmgmt(tid, "001"))["39"] == "00"
        resp = t.call(purchase(tid))
        assert resp["39"] == ROUTED and len(resp["37"]) == 12, "reached the financial handler, with an RRN"
    tid2 = new_tid()
    daemon.add_terminal(tid2)
    with term(daemon, "mis") as t:
        assert t.call(purchase(tid2))["39"] == ROUTED


def test_only_the_connection_that_signed_on_signs_off(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, "pos") as real, term(daemon, "pos") as attacker, term(daemon, "mis") as other_listener:
        assert real.call(netmgmt(tid, "001"))["39"] == "00"
        assert attacker.call(netmgmt(tid, "002"))["39"] == "63"
        assert other_listener.call(netmgmt(tid, "002"))["39"] == "63"
        assert real.call(purchase(tid))["39"] == ROUTED, "the refused sign-offs changed nothing"
        assert real.call(netmgmt(tid, "002"))["39"] == "00"
        assert real.call(purchase(tid))["39"] == "58"
    assert daemon.wait_event("sign_off_refused", lambda e: e.get("terminal") == tid)


def test_unknown_terminal_03_and_disabled_58(daemon: Any) -> None:
    with term(daemon, "pos") as t:
        for req in (netmgmt("NOSUCH1", "001"), purchase("NOSUCH1")):
            resp = t.call(req)
            assert resp["39"] == "03" and "64" not in resp and "128" not in resp
    tid = new_tid()
    daemon.add_terminal(tid, mac_alg="cmac-aes", mac_key_hex=CMAC_KEY_HEX, signed_on=True)
    daemon.cli("terminal", "disable", tid)
    with term(daemon, "pos") as t:
        assert t.call(netmgmt(tid, "001"))["39"] == "58"
        t.send(purchase(tid), mac=("cmac-aes", CMAC_KEY_HEX))
        raw = t.recv_raw()
        assert decode(raw, "pos")["39"] == "58"
        assert check_mac(raw, "pos", "cmac-aes", CMAC_KEY_HEX), "declines to a keyed terminal are MACed"


def test_unknown_mti_12_and_unsupported_code_40(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid, signed_on=True)
    with term(daemon, "pos") as t:
        req = {**purchase(tid), "t": "0120"}
        resp = t.call(req)
        assert resp["t"] == "0130" and resp["39"] == "12"
        # A 0100 is a stored-value pre-authorisation (006000) and nothing else.
        resp = t.call({**purchase(tid), "t": "0100"})
        assert resp["t"] == "0110" and resp["39"] == "40"
        resp = t.call(purchase(tid, pc="770000"))
        assert resp["39"] == "40"
        resp = t.call(netmgmt(tid, "999"))
        assert resp["39"] == "40"


# ---------------------------------------------------------------------- MAC


@pytest.mark.parametrize("alg,key", [("cmac-aes", CMAC_KEY_HEX), ("x919", X919_KEY_HEX)])
@pytest.mark.parametrize("listener", ["pos", "mis"])
def test_mac_good_bad_missing(daemon: Any, alg: str, key: str, listener: str) -> None:
    tid = new_tid("K")
    daemon.add_terminal(tid, mac_alg=alg, mac_key_hex=key)
    with term(daemon, listener) as t:
        assert t.call(netmgmt(tid, "001"))["39"] == "00", "sign-on needs no MAC"
        # good MAC: passes, routed to the 40 handler, response MACed
        req = purchase(tid)
        t.send(req, mac=(alg, key))
        raw = t.recv_raw()
        resp = decode(raw, t.spec)
        assert resp["39"] == ROUTED and "64" in resp
        assert check_mac(raw, t.spec, alg, key)
        assert_echo(req, resp)
        if listener == "mis":
            assert resp["64"] == resp["64"].upper()
        # bad MAC
        t.send_raw(t.frame(encode(purchase(tid), t.spec, mac_override=b"\x01" * 8)))
        raw = t.recv_raw()
        assert decode(raw, t.spec)["39"] == "63" and check_mac(raw, t.spec, alg, key)
        # missing MAC
        t.send(purchase(tid))
        raw = t.recv_raw()
        assert decode(raw, t.spec)["39"] == "63" and check_mac(raw, t.spec, alg, key)
        # a request with a secondary bitmap carries its MAC in 128 (the 0410 has none: 64)
        # (With a platform currency provisioned, a reversal of an unknown original is
        # answered 25 and leaves its marker.)
        daemon.cli("program", "add", "MACP", "--name", "MAC test", "--kind", "alliance",
                   "--issue-price-minor", "1", "--redeem-value-minor", "1", check=False)
        rev = {**purchase(tid), "t": "0400", "90": "0200" + next_stan() + "0101120000" + "0" * 22}
        t.send(rev, mac=(alg, key))
        raw = t.recv_raw()
        resp = decode(raw, t.spec)
        assert resp["t"] == "0410" and resp["39"] == "25" and "64" in resp
        assert check_mac(raw, t.spec, alg, key)
    fams = {f.name: f for f in text_string_to_metric_families(daemon.scrape())}
    assert sum(s.value for s in fams["switchd_mac_failures"].samples if s.name.endswith("_total")) >= 2


# ---------------------------------------------------------------------- pipelining, timeouts, drain


def test_pipelining_out_of_order(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, "pos") as t, RowLock(daemon.dsn, tid) as lock:
        sign_on = netmgmt(tid, "001")
        echoes = [netmgmt(tid, "301") for _ in range(3)]
        t.send(sign_on)  # blocks on the row lock inside the daemon
        for e in echoes:
            t.send(e)
        got = [t.recv()["11"] for _ in range(3)]
        assert sorted(got) == sorted(e["11"] for e in echoes), "the echoes overtook the blocked sign-on"
        lock.release()
        resp = t.recv()
        assert resp["11"] == sign_on["11"] and resp["39"] == "00"


def test_handler_timeout_answers_91(daemon_db: str, start_daemon: Any) -> None:
    d = start_daemon(daemon_db, [{**POS_LISTENER, "timeout_handler_s": 0.3}])
    tid = new_tid()
    d.add_terminal(tid)
    with term(d, "pos") as t, RowLock(d.dsn, tid):
        started = time.monotonic()
        resp = t.call(netmgmt(tid, "001"))
        assert resp["39"] == "91" and time.monotonic() - started < 3
    with term(d, "pos") as t:
        assert t.call(netmgmt(tid, "301"))["39"] == "00"


def test_graceful_drain(daemon_db: str, start_daemon: Any) -> None:
    d = start_daemon(daemon_db, [POS_LISTENER], drain_s=10.0)
    tid = new_tid()
    d.add_terminal(tid)
    with term(d, "pos") as t, RowLock(d.dsn, tid) as lock:
        req = netmgmt(tid, "001")
        t.send(req)
        lock.wait_blocked()  # the daemon has read the frame and is in the middle of it
        d.signal(signal.SIGTERM)
        d.wait_event("shutdown_requested")
        time.sleep(0.3)
        assert d.running, "drain waits for the in-flight request"
        with pytest.raises(OSError):  # no longer accepting
            Terminal(d.ports["pos"], timeout_s=1).call(netmgmt(tid, "301"))
        lock.release()
        resp = t.recv()
        assert resp["11"] == req["11"] and resp["39"] == "00"
        assert t.closed_by_peer(5)
    assert d.wait() == 0
    assert d.events("drained")[0]["abandoned"] == 0


# ---------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("listener", ["pos", "mis"])
def test_duplicates_across_restart(daemon_db: str, start_daemon: Any, listener: str) -> None:
    d = start_daemon(daemon_db)
    tid = new_tid("D")
    d.add_terminal(tid, mac_alg="x919", mac_key_hex=X919_KEY_HEX, signed_on=True)
    req = purchase(tid, pan=PAN_2)
    with term(d, listener) as t:
        t.send(req, mac=("x919", X919_KEY_HEX))
        first = t.recv_raw()
    assert decode(first, LISTENERS[listener][1])["39"] == ROUTED
    assert d.stop() == 0
    d2 = start_daemon(daemon_db)
    with term(d2, listener) as t:
        t.send(req, mac=("x919", X919_KEY_HEX))
        again = t.recv_raw()
        # x919 is deterministic and the key is the same: the replay is byte for byte the original.
        assert again == first
        changed = {**req, "4": "000000000999"}
        t.send(changed, mac=("x919", X919_KEY_HEX))
        raw = t.recv_raw()
        resp = decode(raw, t.spec)
        assert resp["39"] == "94" and resp["4"] == "000000000999"
        assert check_mac(raw, t.spec, "x919", X919_KEY_HEX)
        # still the original for the original content
        t.send(req, mac=("x919", X919_KEY_HEX))
        assert t.recv_raw() == first
    assert any(e.get("replayed") for e in d2.events("request"))


# ---------------------------------------------------------------------- validation


def _fin(tid: str) -> dict[str, str]:
    return purchase(tid)


def _drop(fields: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != name}


VALIDATION_CASES: list[tuple[str, Any]] = [
    ("bad_luhn", lambda f: {**f, "2": PAN_1[:-1] + str((int(PAN_1[-1]) + 1) % 10)}),
    ("pan_letters", lambda f: {**f, "2": "62123456789012AB"}),
    ("amount_not_numeric", lambda f: {**f, "4": "00000000010A"}),
    ("processing_not_numeric", lambda f: {**f, "3": "00A000"}),
    ("stan_not_numeric", lambda f: {**f, "11": "12345X"}),
    ("bad_datetime_month", lambda f: {**f, "7": "1301120000"}),
    ("bad_datetime_day", lambda f: {**f, "7": "0231120000"}),
    ("bad_datetime_hour", lambda f: {**f, "7": "0101250000"}),
    ("bad_local_time", lambda f: {**f, "12": "126000"}),
    ("bad_local_date", lambda f: {**f, "13": "0001"}),
    ("bad_currency", lambda f: {**f, "49": "1X6"}),
    ("bad_merchant_chars", lambda f: {**f, "42": "M!" + " " * 13}),
    ("forbidden_39", lambda f: {**f, "39": "00"}),
    ("forbidden_38", lambda f: {**f, "38": "123456"}),
    ("missing_currency_for_money", lambda f: _drop(f, "49")),
    *[(f"missing_{n}", functools.partial(_drop, name=n)) for n in ("2", "3", "4", "7", "11", "42")],
]


def test_every_validation_failure_answers_30(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid, signed_on=True)
    with term(daemon, "pos") as t:
        for name, mutate in VALIDATION_CASES:
            req = mutate(_fin(tid))
            resp = t.call(req)
            assert resp["t"] == "0210" and resp["39"] == "30", name
            assert_echo(req, resp)
        # 0800 and 0500 rules
        for req in (_drop(netmgmt(tid), "70"), _drop(netmgmt(tid), "11"), {**netmgmt(tid), "2": PAN_1},
                    {"t": "0500", "3": "920000", "7": "0101120000", "11": next_stan(), "41": tid.ljust(8),
                     "42": "M0000001".ljust(15), "74": "0" * 10, "76": "0" * 10, "86": "0" * 16}):
            resp = t.call(req)
            assert resp["39"] == "30" and resp["t"] in ("0810", "0510"), req
        # 49 is optional for points amounts: reaches routing (40), not 30
        assert t.call(_drop(purchase(tid, pc="006500"), "49"))["39"] == ROUTED
        # a missing 41 cannot be attributed to a terminal: still 30
        resp = t.call(_drop(_fin(tid), "41"))
        assert resp["39"] == "30" and "41" not in resp


def test_undecodable_frame_30_and_unreadable_mti_closes(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid, signed_on=True)
    req = purchase(tid)
    raw = encode(req, "pos")
    with term(daemon, "pos") as t:
        t.send_raw(nac2(raw[:-2]))  # field 49 cut short
        resp = t.recv()
        assert resp["39"] == "30" and resp["t"] == "0210"
        assert_echo(req, resp)  # everything before the broken field is echoed
        t.send_raw(nac2(raw + b"XX"))  # trailing garbage
        assert t.recv()["39"] == "30"
        t.send_raw(nac2(b"\x00\xffgarbage"))
        assert t.closed_by_peer(5)
    with term(daemon, "pos") as t:  # and nobody else noticed
        assert t.call(netmgmt(tid, "301"))["39"] == "00"


# ---------------------------------------------------------------------- framing abuse and limits


def abuse_listeners() -> list[dict[str, Any]]:
    return [
        {**POS_LISTENER, "name": "slow", "timeout_frame_s": 0.5, "timeout_idle_s": 60.0, "sign_on_required": False},
        {**POS_LISTENER, "name": "idle", "timeout_idle_s": 0.5, "sign_on_required": False},
        {**POS_LISTENER, "name": "capped", "connections_max": 2, "sign_on_required": False},
        {**POS_LISTENER, "name": "per_host", "connections_per_address_max": 3, "sign_on_required": False},
        {**MIS_LISTENER, "name": "mis_small", "frame_bytes_max": 200},
        {**POS_TPDU_LISTENER, "name": "tpdu_small", "frame_bytes_max": 200, "sign_on_required": False},
    ]


@pytest.fixture(scope="module")
def abuse_daemon(daemon_db: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fixtures_daemon import Daemon

    workdir = tmp_path_factory.mktemp("abuse")
    # The default policy: terminals without a MAC key move nothing (the other daemons allow them).
    d = Daemon(workdir, daemon_db, abuse_listeners(), extra={"security": {"unkeyed_terminals": "refuse"}}).start()
    try:
        d.add_terminal("HEALTHY1")
        yield d
    finally:
        assert d.stop() == 0


def test_oversize_frames_close_the_connection(abuse_daemon: Any) -> None:
    d = abuse_daemon
    with Terminal(d.ports["mis_small"], "ascii4", "mis") as t:
        t.send_raw(b"0201" + b"0" * 201)
        assert t.closed_by_peer(5)
    with Terminal(d.ports["mis_small"], "ascii4", "mis") as t:
        t.send_raw(b"02x0")  # not a length
        assert t.closed_by_peer(5)
    with Terminal(d.ports["tpdu_small"], "nac2", "pos", bytes.fromhex("6000010002")) as t:
        t.send_raw(nac2(encode(netmgmt("HEALTHY1"), "pos"), bytes.fromhex("7000010002")))  # bad TPDU id
        assert t.closed_by_peer(5)
    with Terminal(d.ports["tpdu_small"], "nac2", "pos", bytes.fromhex("6000010002")) as t:
        t.send_raw(b"\xff\xff")
        assert t.closed_by_peer(5)
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    reasons = {s.labels.get("reason") for s in fams["switchd_frames_rejected"].samples if s.value > 0}
    assert {"oversize", "bad_header", "bad_tpdu"} <= reasons


def test_frame_cut_off_midway(abuse_daemon: Any) -> None:
    d = abuse_daemon
    frame = nac2(encode(netmgmt("HEALTHY1"), "pos"))
    with Terminal(d.ports["slow"]) as t:
        t.send_raw(frame[: len(frame) // 2])
        t.sock.shutdown(socket.SHUT_WR)  # cut off: the peer goes away mid-frame
        assert t.closed_by_peer(5)
    with Terminal(d.ports["slow"]) as t:
        t.send_raw(frame[: len(frame) // 2])
        assert t.closed_by_peer(3), "an unfinished frame is closed after timeout_frame_s"
    with Terminal(d.ports["slow"]) as t:
        assert t.call(netmgmt("HEALTHY1"))["39"] == "00"


def test_slow_loris_closed_while_others_served(abuse_daemon: Any) -> None:
    d = abuse_daemon
    frame = nac2(encode(netmgmt("HEALTHY1"), "pos"))
    loris = Terminal(d.ports["slow"])
    with Terminal(d.ports["slow"]) as healthy:
        started = time.monotonic()
        closed = False
        for i in range(len(frame)):
            try:
                loris.send_raw(frame[i:i + 1])
            except OSError:
                closed = True
                break
            assert healthy.call(netmgmt("HEALTHY1"))["39"] == "00"
            time.sleep(0.1)
            if time.monotonic() - started > 3:
                break
        closed = closed or loris.closed_by_peer(2)
        assert closed, "the trickling connection was closed"
        assert time.monotonic() - started < 3
        assert healthy.call(netmgmt("HEALTHY1"))["39"] == "00"
    loris.close()
    assert d.wait_event("connection_close", lambda e: e.get("reason") == "frame_timeout")


def test_idle_connection_closed(abuse_daemon: Any) -> None:
    d = abuse_daemon
    with Terminal(d.ports["idle"]) as t:
        assert t.call(netmgmt("HEALTHY1"))["39"] == "00"
        assert t.closed_by_peer(3)
    assert d.wait_event("connection_close", lambda e: e.get("reason") == "idle_timeout")


def test_unkeyed_terminals_are_refused_by_default(abuse_daemon: Any) -> None:
    d = abuse_daemon
    unkeyed, keyed = new_tid(), new_tid()
    d.add_terminal(unkeyed)
    d.add_terminal(keyed, mac_alg="cmac-aes", mac_key_hex=CMAC_KEY_HEX)
    with Terminal(d.ports["capped"]) as t:
        assert t.call(netmgmt(unkeyed))["39"] == "00", "network management needs no key"
        assert t.call(purchase(unkeyed))["39"] == "63"
        t.send(purchase(keyed), mac=("cmac-aes", CMAC_KEY_HEX))
        assert t.recv()["39"] == ROUTED
    assert d.wait_event("unkeyed_terminal_refused", lambda e: e.get("terminal") == unkeyed)


def test_one_host_cannot_take_every_slot(abuse_daemon: Any) -> None:
    """A host past its per-address share is refused; another host (a real terminal) is served;
    a flood of refusals is counted one by one but logged about once a second."""
    d = abuse_daemon
    port = d.ports["per_host"]
    hogs = [Terminal(port) for _ in range(3)]
    try:
        for hog in hogs:
            assert hog.call(netmgmt("HEALTHY1"))["39"] == "00"
        flood = 40
        for _ in range(flood):
            with Terminal(port) as refused:
                assert refused.closed_by_peer(3)
        with Terminal(port, source="127.0.0.2") as real:
            assert real.call(netmgmt("HEALTHY1"))["39"] == "00"
    finally:
        for hog in hogs:
            hog.close()
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    assert any(s.labels == {"listener": "per_host", "reason": "connections_per_address_max"} and s.value >= flood
               for s in fams["switchd_connections_rejected"].samples)
    lines = [e for e in d.events("connection_rejected") if e.get("listener") == "per_host"]
    assert 1 <= len(lines) < flood / 4


def test_connection_cap(abuse_daemon: Any) -> None:
    d = abuse_daemon
    a, b = Terminal(d.ports["capped"]), Terminal(d.ports["capped"])
    try:
        assert a.call(netmgmt("HEALTHY1"))["39"] == "00"
        assert b.call(netmgmt("HEALTHY1"))["39"] == "00"
        with Terminal(d.ports["capped"]) as c:
            assert c.closed_by_peer(3), "the third connection is refused"
        assert a.call(netmgmt("HEALTHY1"))["39"] == "00"
    finally:
        a.close()
        b.close()
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    assert any(s.labels == {"listener": "capped", "reason": "connections_max"} and s.value >= 1
               for s in fams["switchd_connections_rejected"].samples)
    # Room again once they left (the server notices the closes asynchronously).
    deadline = time.monotonic() + 5.0
    while True:
        try:
            with Terminal(d.ports["capped"], timeout_s=2) as c:
                assert c.call(netmgmt("HEALTHY1"))["39"] == "00"
            break
        except OSError:  # refused (closed by the server) while the old connections still count
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---------------------------------------------------------------------- TLS


def make_cert(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_listener(daemon_db: str, start_daemon: Any, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    d = start_daemon(daemon_db, [{**POS_LISTENER, "name": "softpos", "tls_cert_file": cert, "tls_key_file": key}])
    tid = new_tid()
    d.add_terminal(tid)
    ctx = ssl.create_default_context(cafile=cert)
    with Terminal(d.ports["softpos"], tls=ctx) as t:
        assert t.call(netmgmt(tid, "001"))["39"] == "00"
        assert t.call(purchase(tid))["39"] == ROUTED
        assert isinstance(t.sock, ssl.SSLSocket) and t.sock.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection(("127.0.0.1", d.ports["softpos"]), timeout=5) as plain:
        plain.sendall(nac2(encode(netmgmt(tid), "pos")))  # not TLS: refused, nothing answered in clear
        try:
            data = plain.recv(100)
        except OSError:
            data = b""
        assert b"0810" not in data
    # A client that speaks at most TLS 1.1 gets no session (the listener's floor is 1.2).
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.suppress(ValueError, ssl.SSLError):  # some OpenSSL builds can't even offer 1.1
            old.set_ciphers("DEFAULT:@SECLEVEL=0")
            old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", d.ports["softpos"]), timeout=5) as raw_sock:
        with pytest.raises((ssl.SSLError, OSError)):
            old.wrap_socket(raw_sock, server_hostname="localhost").do_handshake()


# ---------------------------------------------------------------------- logs, metrics, systemd, CLI


def test_logs_never_hold_a_full_pan(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid, signed_on=True)
    with term(daemon, "pos") as t:
        for pan in (PAN_1, PAN_2):
            t.call(purchase(tid, pan=pan))
            t.call({**purchase(tid, pan=pan), "4": "ABC000000000"})  # 30, still masked
            t.call(purchase("NOSUCH", pan=pan))
        t.send_raw(nac2(encode(purchase(tid, pan=PAN_1), "pos")[:-3]))
        t.recv()
    with term(daemon, "mis") as t:
        t.call(purchase(tid, pan=PAN_2))
    text = daemon.log_text()
    assert PAN_1 not in text and PAN_2 not in text
    assert "621234******1232" in text
    lines = daemon.events("request")
    line = next(e for e in lines if e.get("pan_masked") == "621234******1232")
    for key in ("listener", "peer", "mti", "processing_code", "response_code", "terminal_id", "rrn", "latency_ms"):
        assert key in line
    assert daemon.events("connection_open") and daemon.events("connection_close")


def test_metrics_endpoint(daemon: Any) -> None:
    tid = new_tid()
    daemon.add_terminal(tid)
    with term(daemon, "pos") as t:
        t.call(netmgmt(tid, "001"))
        t.call(purchase(tid))
        fams = {f.name: f for f in text_string_to_metric_families(daemon.scrape())}
    for name in ("switchd_requests", "switchd_request_duration_seconds", "switchd_connections",
                 "switchd_connections_rejected", "switchd_frames_rejected", "switchd_mac_failures",
                 "switchd_ledger_batch_size", "switchd_db_pool_connections", "switchd_ledger_queue_wait_seconds",
                 "switchd_event_loop_lag_seconds", "switchd_compensations_overtaken",
                 "python_gc_objects_collected", "python_gc_collections", "process_cpu_seconds",
                 "process_resident_memory_bytes", "process_open_fds"):
        assert name in fams, name
    assert [s.value for s in fams["switchd_compensations_overtaken"].samples
            if s.name == "switchd_compensations_overtaken_total"] == [0]
    req = {(s.labels["mti"], s.labels["processing"], s.labels["response_code"]): s.value
           for s in fams["switchd_requests"].samples if s.name == "switchd_requests_total"}
    assert req[("0800", "none", "00")] >= 1 and req[("0200", "00", ROUTED)] >= 1
    conns = [s for s in fams["switchd_connections"].samples if s.labels == {"listener": "pos"}]
    assert conns and conns[0].value == 1
    pool = {s.labels["state"]: s.value for s in fams["switchd_db_pool_connections"].samples}
    assert pool["max"] == 4 and pool["open"] >= 1
    # The loop's lag is sampled every 0.25 s from the start: a running daemon has samples.
    deadline = time.monotonic() + 5
    while _loop_lag_samples(daemon) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _loop_lag_samples(daemon) >= 1


def _loop_lag_samples(daemon: Any) -> float:
    fams = {f.name: f for f in text_string_to_metric_families(daemon.scrape())}
    return next(s.value for s in fams["switchd_event_loop_lag_seconds"].samples
                if s.name == "switchd_event_loop_lag_seconds_count")


def test_systemd_notify(daemon_db: str, start_daemon: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        d = start_daemon(daemon_db, [POS_LISTENER], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        got: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 2:
            got.append(sock.recv(256).decode())
        assert got[0] == "READY=1" and got.count("WATCHDOG=1") >= 2
        assert d.stop() == 0
        rest: list[str] = []
        sock.settimeout(1)
        try:
            while True:
                rest.append(sock.recv(256).decode())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest
    finally:
        sock.close()


def test_terminal_cli(daemon: Any) -> None:
    tid = new_tid("C")
    out = daemon.cli("terminal", "add", tid, "--merchant", "M0000009", "--mac-alg", "cmac-aes",
                     "--mac-key", CMAC_KEY_HEX)
    assert tid in out.stdout and CMAC_KEY_HEX not in out.stdout
    shown = daemon.cli("terminal", "show", tid, "--json").stdout
    data = json.loads(shown)
    assert data["mac_alg"] == "cmac-aes" and data["mac_key"] == "sealed"
    assert CMAC_KEY_HEX not in shown.lower()
    listed = json.loads(daemon.cli("terminal", "list", "--json").stdout)
    assert tid in [r["terminal_id"] for r in listed]
    assert CMAC_KEY_HEX not in daemon.cli("terminal", "list").stdout.lower()
    dup = daemon.cli("terminal", "add", tid, "--merchant", "M0000009", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1
    # a MAC key without a master key: one clear line, nothing stored
    env = {k: v for k, v in daemon.env.items() if k != "SWITCHD_MASTER_KEY"}
    res = daemon.cli("terminal", "add", new_tid("C"), "--merchant", "M1", "--mac-alg", "x919",
                     "--mac-key", X919_KEY_HEX, check=False, env=env)
    assert res.returncode != 0 and "no master key configured" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and X919_KEY_HEX not in res.stderr
    assert daemon.cli("terminal", "disable", tid).returncode == 0
    assert json.loads(daemon.cli("terminal", "show", tid, "--json").stdout)["status"] == "disabled"
    missing = daemon.cli("terminal", "show", "NOPE", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr
    # The key may come from a file, so it never sits on a command line.
    key_file = daemon.workdir / "term.key"
    key_file.write_text(X919_KEY_HEX + "\n")
    tid2 = new_tid("C")
    out = daemon.cli("terminal", "add", tid2, "--merchant", "M0000009", "--mac-alg", "x919",
                     "--mac-key-file", str(key_file))
    assert X919_KEY_HEX not in out.stdout
    assert json.loads(daemon.cli("terminal", "show", tid2, "--json").stdout)["mac_alg"] == "x919"
    assert daemon.cli("terminal", "enable", tid).returncode == 0


@pytest.mark.parametrize("listener", ["pos", "mis"])
def test_format_error_to_a_keyed_terminal_is_maced(daemon: Any, listener: str) -> None:
    tid = new_tid()
    daemon.add_terminal(tid, mac_alg="cmac-aes", mac_key_hex=CMAC_KEY_HEX, signed_on=True)
    with term(daemon, listener) as t:
        bad = {**purchase(tid), "7": "1399999999"}  # month 13: decodes, but invalid
        t.send(bad, mac=("cmac-aes", CMAC_KEY_HEX))
        raw = t.recv_raw()
        resp = decode(raw, t.spec)
        assert resp["39"] == "30" and resp["11"] == bad["11"]
        assert check_mac(raw, t.spec, "cmac-aes", CMAC_KEY_HEX), "declines to a keyed terminal are MACed"


def _routed_until(daemon: Any, tid: str, want: str, within_s: float = 5.0) -> float:
    """Send purchases until one is answered ``want``; the seconds it took (fails after within_s)."""
    started = time.monotonic()
    while True:
        with term(daemon, "mis") as t:
            code = t.call(purchase(tid))["39"]
        waited = time.monotonic() - started
        if code == want:
            return waited
        assert waited < within_s, f"still {code} after {within_s}s, expected {want}"
        time.sleep(0.05)


def test_terminal_changes_are_announced_to_the_daemon(daemon: Any, daemon_db: str) -> None:
    # The cache keeps a terminal CACHE_TTL_WATCHED_S (30 s) while the change feed is up, so
    # a change seen within a few seconds was announced, not timed out.
    daemon.wait_event("terminal_feed_up")
    assert "switchd_terminal_feed_up 1.0" in daemon.scrape()
    tid = new_tid()
    daemon.add_terminal(tid)
    _routed_until(daemon, tid, ROUTED)
    daemon.cli("terminal", "disable", tid)
    _routed_until(daemon, tid, "58")  # a disabled terminal gets nothing but a decline, at once
    daemon.cli("terminal", "enable", tid)
    _routed_until(daemon, tid, ROUTED)

    # The feed's connection dies: the daemon says so, falls back to the short lifetime,
    # reconnects, and changes are announced again.
    async def kill(conn: Any) -> int:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'switchd-feed' AND datname = current_database()"))

    assert db_run(daemon_db, kill) >= 1
    daemon.wait_event("terminal_feed_down")
    daemon.wait_event("terminal_feed_up", lambda e: len(daemon.events("terminal_feed_up")) >= 2)
    daemon.cli("terminal", "disable", tid)
    _routed_until(daemon, tid, "58")


def test_a_peer_that_never_reads_is_cut_off(abuse_daemon: Any) -> None:
    # It keeps sending echoes and reads nothing: once our write buffer is full the switch
    # stops reading it (backpressure), and after timeout_idle_s of that it aborts the
    # connection rather than hold the slot and the buffer for ever.
    d = abuse_daemon
    frame = nac2(encode(netmgmt("HEALTHY1", "301"), "pos"))
    burst = frame * 500
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", d.ports["idle"]))
    sock.settimeout(0.2)
    cut = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                sock.send(burst)
            except TimeoutError:  # the switch is not reading us: keep pushing until it gives up
                continue
            except (ConnectionResetError, BrokenPipeError):
                cut = True
                break
    finally:
        sock.close()
    assert cut, "a peer that never reads must be cut off"
    d.wait_event("connection_close", lambda e: e.get("reason") == "write_timeout")
    fams = {f.name: f for f in text_string_to_metric_families(d.scrape())}
    assert any(s.labels.get("reason") == "write_timeout" and s.value > 0
               for s in fams["switchd_connections_rejected"].samples)
    with Terminal(d.ports["idle"]) as t:  # and nobody else noticed
        assert t.call(netmgmt("HEALTHY1", "301"))["39"] == "00"


def test_warns_at_start_when_the_server_runs_without_autovacuum(daemon: Any) -> None:
    # Plans cached per connection while a table was small read it whole until it is analyzed
    # (docs/operating.md, PostgreSQL): without autovacuum the operator must know to ANALYZE.
    setting = db_run(daemon.dsn, lambda conn: conn.fetchval("SELECT current_setting('autovacuum')"))
    warned = daemon.events("autovacuum_off")
    if setting == "off":
        assert len(warned) == 1 and warned[0]["level"] == "warning" and "ANALYZE" in warned[0]["fix"]
    else:
        assert warned == []
