"""The tools without the daemon: message building, framing, MAC, isodump, and loadgen/possim
against a small fake switch written here (pyiso8583 + switch.mac, nothing from tools/)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import iso8583
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import specs
from switch import mac as server_mac
from tools import _kinds, _mac, _msg, _stats, _wire, isodump, loadgen, possim

NIST_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
NIST_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
X919_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PAN = "6250941234567890"


# --- MAC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tag_hex"),
    [(0, "bb1d6929e9593728"), (16, "070a16b46b4d4144"), (40, "dfa66747de9ae630"), (64, "51f0bebf7e3b9d92")],
)
def test_tools_cmac_nist_vectors(length: int, tag_hex: str) -> None:
    assert _mac.mac("cmac-aes", NIST_KEY, NIST_MSG[:length]).hex() == tag_hex


def test_tools_x919_published_vector() -> None:
    assert _mac.mac("x919", X919_KEY, b"Now is the time for all ").hex().upper() == "A1C72E74EA3FA9B6"


@settings(max_examples=100, deadline=None)
@given(
    alg=st.sampled_from(_mac.ALGORITHMS),
    key=st.binary(min_size=16, max_size=16),
    data=st.binary(max_size=120),
)
def test_tools_mac_agrees_with_server(alg: str, key: bytes, data: bytes) -> None:
    assert _mac.mac(alg, key, data) == server_mac.compute(alg, key, data)


def test_tools_mac_rejects_bad_keys() -> None:
    with pytest.raises(ValueError, match="16-byte key"):
        _mac.mac("x919", bytes(8), b"")
    with pytest.raises(ValueError, match="unknown MAC algorithm"):
        _mac.mac("des", bytes(16), b"")


# --- framing -------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(message=st.binary(min_size=1, max_size=300), tpdu=st.booleans(), framing=st.sampled_from(["nac2", "ascii4"]))
def test_frame_roundtrip(message: bytes, tpdu: bool, framing: str) -> None:
    tp = _wire.make_tpdu(0x0012, 0x0034) if tpdu and framing == "nac2" else b""
    data = _wire.frame(message, framing, tp)
    header = _wire.header_bytes(framing)
    assert _wire.parse_length(data[:header], framing) == len(tp) + len(message)
    assert _wire.unframe(data, framing, bool(tp)) == _wire.Frame(tp, message)


def test_nac2_length_counts_tpdu() -> None:
    data = _wire.frame(b"0800", "nac2", bytes.fromhex("6000010002"))
    assert data[:2] == b"\x00\x09"


def test_ascii4_header_and_keepalive() -> None:
    assert _wire.frame(b"x" * 42, "ascii4")[:4] == b"0042"
    assert _wire.unframe(b"0000", "ascii4") == _wire.Frame(b"", b"")

    async def read() -> _wire.Frame:
        reader = asyncio.StreamReader()
        reader.feed_data(b"0000" + b"0000" + b"00040800")
        reader.feed_eof()
        return await _wire.read_frame(reader, "ascii4")

    assert asyncio.run(read()).message == b"0800"


def test_frame_errors_carry_position() -> None:
    with pytest.raises(_wire.FrameError, match="at byte 2"):
        _wire.unframe(bytes.fromhex("0009 7000010002") + b"0800", "nac2", has_tpdu=True)
    with pytest.raises(_wire.FrameError, match="not 4 decimal digits"):
        _wire.unframe(b"00x40800", "ascii4")
    with pytest.raises(_wire.FrameError, match="length header says 5"):
        _wire.unframe(b"\x00\x05" + b"0800", "nac2")
    with pytest.raises(ValueError, match="4096"):
        _wire.frame(bytes(4097), "nac2")


def test_tpdu_swap() -> None:
    assert _wire.swap_tpdu(bytes.fromhex("6000120034")).hex() == "6000340012"
    with pytest.raises(ValueError):
        _wire.parse_tpdu_hex("7000010002")


# --- message building ----------------------------------------------------------------------------


def _now() -> str:
    return "0309140507"


@pytest.mark.parametrize("spec_name", ["pos", "mis"])
@pytest.mark.parametrize("alg", _mac.ALGORITHMS)
def test_build_with_mac_decodes_and_verifies(spec_name: str, alg: str) -> None:
    fields = possim.build_request(
        mti="0200", stan="000123", tid="T0000001", mid="M00000000000001", now=_now(),
        proc="000000", pan=PAN, amount="1000", currency="156",
    )
    raw = _msg.build(fields, spec_name, alg, KEY)
    dec, _enc = iso8583.decode(raw, specs.load(spec_name))
    for key in ("2", "3", "4", "7", "11", "41", "42", "49"):
        assert dec[key] == fields[key]
    assert dec["4"] == "000000001000" and dec["41"] == "T0000001" and len(dec["42"]) == 15
    size = 8 if spec_name == "pos" else 16
    tag = server_mac.compute(alg, KEY, raw[:-size])
    if spec_name == "pos":
        assert raw[-8:] == tag
    else:
        assert raw[-16:] == tag.hex().upper().encode()
        assert dec["p"] == dec["p"].upper()
    assert int(dec["p"][:16], 16) & 1  # bit 64 set in the bitmap the MAC covers
    assert _msg.check_mac(raw, spec_name, alg, KEY) is True
    assert _msg.check_mac(raw, spec_name, alg, bytes(16)) is False


def test_mac_goes_to_128_with_secondary_bitmap() -> None:
    fields = {"t": "0400", "2": PAN, "3": "000000", "4": "0" * 12, "7": _now(), "11": "000002",
              "41": "T0000001", "42": "M".ljust(15), "90": "0200" + "000001" + _now() + "0" * 22}
    raw = _msg.build(fields, "pos", "cmac-aes", KEY)
    dec, _enc = iso8583.decode(raw, specs.load("pos"))
    assert "128" in dec and "64" not in dec
    assert raw[-8:] == server_mac.compute("cmac-aes", KEY, raw[:-8])


def test_possim_network_request() -> None:
    fields = possim.build_request(mti="0800", stan="000001", tid="T1", mid="M1", now=_now(),
                                  extra={"70": "001"})
    raw = _msg.build(fields, "pos")
    dec, _enc = iso8583.decode(raw, specs.load("pos"))
    assert set(dec) == {"t", "p", "1", "7", "11", "41", "70"}
    assert dec["70"] == "001"


def test_possim_field_option() -> None:
    assert possim.parse_field_option(["48=PG003ABC"]) == {"48": "PG003ABC"}
    with pytest.raises(ValueError):
        possim.parse_field_option(["x=1"])


@pytest.mark.parametrize("name", sorted(_kinds.KINDS))
def test_every_kind_encodes(name: str) -> None:
    kind = _kinds.KINDS[name]
    fields = _kinds.build_fields(kind, stan="000009", tid="LG000001", mid="M1", now=_now(),
                                 pan=PAN, amount=kind.amount_max)
    raw = _msg.build(fields, "pos", "x919", KEY)
    dec, _enc = iso8583.decode(raw, specs.load("pos"))
    assert dec["t"] == kind.mti and dec["11"] == "000009"
    mandatory = {"7", "11", "41", "70"} if kind.mti == "0800" else {"2", "3", "4", "7", "11", "41", "42"}
    assert mandatory <= set(dec)


def test_parse_mix() -> None:
    assert _kinds.parse_mix("purchase=60,redeem=15, echo") == [("purchase", 60), ("redeem", 15), ("echo", 1)]
    for bad in ("nope=1", "echo=x", "echo=0", ""):
        with pytest.raises(ValueError):
            _kinds.parse_mix(bad)


def test_stan_space_never_hands_out_busy() -> None:
    space = loadgen.StanSpace(random.Random(7))
    taken = {space.take("T1") for _ in range(2000)}
    assert len(taken) == 2000
    space.release("T1", sorted(taken)[0])
    assert space.take("T2") not in ("", None)


# --- isodump -------------------------------------------------------------------------------------


def test_isodump_masks_and_redacts() -> None:
    fields = {"t": "0200", "2": PAN, "3": "000000", "4": "000000001000", "7": _now(), "11": "000001",
              "41": "T0000001", "42": "M".ljust(15), "52": "0123456789ABCDEF"}
    raw = _msg.build(fields, "pos", "cmac-aes", KEY)
    line = _wire.frame(raw, "nac2", bytes.fromhex("6000010002")).hex()
    out, failures = isodump.dump_lines([line], "nac2", "pos", True)
    text = "\n".join(out)
    assert failures == 0
    assert "625094******7890" in text and PAN not in text
    assert "0123456789ABCDEF" not in text and "[redacted, 16 chars]" in text
    assert "[MAC, 16 hex chars]" in text
    assert "tpdu 6000010002" in text
    assert "  4    000000001000" in text


def test_isodump_mis_ascii4() -> None:
    fields = {"t": "0800", "7": _now(), "11": "000001", "41": "T0000001", "70": "301"}
    line = _wire.frame(_msg.build(fields, "mis"), "ascii4").hex()
    out, failures = isodump.dump_lines([line, "", "# comment"], "ascii4", "mis", False)
    assert failures == 0 and out[0].startswith("line 1: 0800") and "  70   301" in out


def test_isodump_errors_never_raise() -> None:
    good = _msg.build({"t": "0800", "7": _now(), "11": "000001", "41": "T0000001", "70": "301"}, "pos")
    lines = ["zz", "123", good[:20].hex(), "0004", good.hex() + "00" * 3, ""]
    out, failures = isodump.dump_lines(lines, "none", "pos", False)
    assert failures == 5
    assert out[0].startswith("line 1: error: not hex")
    assert out[1].startswith("line 2: error: odd number")
    assert "at byte" in out[2]
    assert all(line.startswith(f"line {i + 1}: error") for i, line in enumerate(out))


def test_isodump_cli() -> None:
    raw = _msg.build({"t": "0800", "7": _now(), "11": "000001", "41": "T0000001", "70": "301"}, "pos")
    result = CliRunner().invoke(isodump.main, ["--framing", "nac2"], input=_wire.frame(raw, "nac2").hex() + "\nxyz\n")
    assert result.exit_code == 1
    assert "line 1: 0800" in result.output and "line 2: error" in result.output
    assert "Traceback" not in result.output


# --- a fake switch for loadgen and possim --------------------------------------------------------


@dataclass
class FakeSwitch:
    framing: str = "nac2"
    spec_name: str = "pos"
    tpdu: bool = False
    keys: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    max_delay_s: float = 0.002
    answer: bool = True
    port: int = 0
    requests: int = 0
    mac_bad: int = 0
    collisions: int = 0
    _inflight: set[tuple[str, str]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        spec = specs.load(self.spec_name)
        try:
            while True:
                header = await reader.readexactly(2 if self.framing == "nac2" else 4)
                size = int.from_bytes(header, "big") if self.framing == "nac2" else int(header)
                body = await reader.readexactly(size)
                tp, msg = (body[:5], body[5:]) if self.tpdu else (b"", body)
                req, _ = iso8583.decode(msg, spec)
                self.requests += 1
                if self.answer:
                    asyncio.get_running_loop().create_task(self._respond(writer, spec, tp, msg, req))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, spec: dict, tp: bytes, raw: bytes, req: dict) -> None:
        key_id = (req["41"], req["11"])
        if key_id in self._inflight:
            self.collisions += 1
        self._inflight.add(key_id)
        await asyncio.sleep(random.uniform(0, self.max_delay_s))  # answer out of order
        self._inflight.discard(key_id)
        resp = {"t": f"{int(req['t']) + 10:04d}", "39": "00"}
        for f in ("2", "3", "4", "7", "11", "41", "42", "70"):
            if f in req:
                resp[f] = req[f]
        keyed = self.keys.get(req["41"].rstrip())
        mac_size = 8 if self.spec_name == "pos" else 16
        if keyed and not req["t"].startswith("08"):
            alg, key = keyed
            got = raw[-mac_size:] if mac_size == 8 else bytes.fromhex(raw[-16:].decode())
            if not server_mac.verify(alg, key, raw[:-mac_size], got):
                self.mac_bad += 1
            resp["64"] = "0" * 16
        encoded, _ = iso8583.encode(resp, spec)
        out = bytes(encoded)
        if keyed and not req["t"].startswith("08"):
            tag = server_mac.compute(keyed[0], keyed[1], out[:-mac_size])
            out = out[:-mac_size] + (tag if mac_size == 8 else tag.hex().upper().encode())
        body = (tp[:1] + tp[3:5] + tp[1:3] if tp else b"") + out
        header = len(body).to_bytes(2, "big") if self.framing == "nac2" else b"%04d" % len(body)
        writer.write(header + body)


@pytest.fixture
def fake() -> Iterator[FakeSwitch]:
    switch = FakeSwitch()
    switch.start()
    yield switch
    switch.stop()


def test_loadgen_echo_closed_loop(fake: FakeSwitch) -> None:
    cfg = loadgen.LoadConfig(port=fake.port, connections=3, inflight=4, requests=60,
                             terminals=loadgen.make_terminals("LG", 3, "", "", b""), timeout_s=2)
    summary = loadgen.run(cfg)
    assert summary["responses"] == 60 and summary["sent"] == 60
    assert summary["errors"] == {}
    assert summary["response_codes"] == {"00": 60}
    assert fake.requests == 60 + 3  # plus one sign-on per connection
    assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0


def test_loadgen_shared_terminals_keyed_financial_mis(tmp_path: Path) -> None:
    switch = FakeSwitch(framing="ascii4", spec_name="mis", max_delay_s=0.005,
                        keys={"T1": ("x919", KEY), "T2": ("cmac-aes", KEY)})
    switch.start()
    try:
        terminals = tmp_path / "terminals.csv"
        terminals.write_text(f"# tid,mid,alg,key\nT1,M1,x919,{KEY.hex()}\nT2,M2,cmac-aes,{KEY.hex()}\n")
        pans = tmp_path / "pans.txt"
        pans.write_text(PAN + "\n")
        cfg = loadgen.LoadConfig(
            port=switch.port, framing="ascii4", spec="mis", connections=4, inflight=8, requests=200,
            mix=_kinds.parse_mix("purchase=3,redeem=1,echo=1"),
            terminals=loadgen.read_terminals(str(terminals)), pans=loadgen.read_pans(str(pans)),
            timeout_s=2, sign_on=False,
        )
        summary = loadgen.run(cfg)
    finally:
        switch.stop()
    assert summary["responses"] == 200, summary
    assert summary["errors"] == {}
    assert switch.mac_bad == 0
    assert switch.collisions == 0  # 4 connections share 2 terminals: STANs must not collide


def test_loadgen_open_loop_with_tpdu() -> None:
    switch = FakeSwitch(tpdu=True)
    switch.start()
    try:
        cfg = loadgen.LoadConfig(port=switch.port, tpdu=bytes.fromhex("6000010002"), connections=2,
                                 inflight=4, rate_per_s=200, duration_s=0.5, timeout_s=2)
        summary = loadgen.run(cfg)
    finally:
        switch.stop()
    assert summary["errors"] == {}, summary
    # About 100 in 0.5 s; never more (a busy machine may send fewer), each one answered.
    assert 0 < summary["responses"] == summary["sent"] <= 110, summary


def test_loadgen_open_loop_measures_from_the_schedule() -> None:
    # One connection, one request in flight, 100/s wanted, answers taking 0-60 ms: most
    # requests go out late, waiting for the one before. Latency from the actual send leaves
    # that wait out (coordinated omission); from the schedule it is counted.
    switch = FakeSwitch(max_delay_s=0.06)
    switch.start()
    try:
        cfg = loadgen.LoadConfig(port=switch.port, connections=1, inflight=1, rate_per_s=100, duration_s=1.0,
                                 timeout_s=2, sign_on=False)
        summary = loadgen.run(cfg)
    finally:
        switch.stop()
    assert summary["errors"] == {} and summary["responses"] > 5, summary
    sent, sched = summary["latency_ms"], summary["latency_from_schedule_ms"]
    assert sched["mean"] > sent["mean"] + 5.0, (sched, sent)
    assert summary["schedule_slips"] > 0, summary


def test_loadgen_closed_loop_has_no_schedule() -> None:
    switch = FakeSwitch()
    switch.start()
    try:
        summary = loadgen.run(loadgen.LoadConfig(port=switch.port, requests=20, inflight=2, timeout_s=2,
                                                 sign_on=False))
    finally:
        switch.stop()
    assert summary["responses"] == 20 and "latency_from_schedule_ms" not in summary, summary


def test_loadgen_counts_timeouts_and_stops() -> None:
    switch = FakeSwitch(answer=False)
    switch.start()
    try:
        cfg = loadgen.LoadConfig(port=switch.port, requests=5, inflight=5, timeout_s=0.3, sign_on=False)
        summary = loadgen.run(cfg)
    finally:
        switch.stop()
    assert summary["responses"] == 0 and summary["errors"] == {"timeout": 5}


def test_loadgen_connection_refused() -> None:
    cfg = loadgen.LoadConfig(port=1, requests=1, timeout_s=1)
    summary = loadgen.run(cfg)
    assert summary["connections"]["failed"] == 1 and summary["responses"] == 0


def test_loadgen_cli_json(fake: FakeSwitch, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(loadgen.main, [
        "--port", str(fake.port), "--connections", "2", "--inflight", "2", "--requests", "20",
        "--json-out", str(out), "--mac-key", KEY.hex(),
    ])
    assert result.exit_code == 0, result.output
    assert "throughput" in result.output
    data = json.loads(out.read_text())
    assert data["responses"] == 20 and data["config"]["connections"] == 2
    assert KEY.hex() not in out.read_text()


def test_possim_against_fake(fake: FakeSwitch) -> None:
    fake.keys["T0000001"] = ("cmac-aes", KEY)
    result = CliRunner().invoke(possim.main, [
        "--port", str(fake.port), "--sign-on", "--mid", "M00000000000001", "--mti", "0200",
        "--proc", "000000", "--pan", PAN, "--amount", "1000", "--currency", "156",
        "--mac-alg", "cmac-aes", "--mac-key", KEY.hex(), "--stan", "42",
    ])
    assert result.exit_code == 0, result.output
    assert "sign-on: 0810 response code 00" in result.output
    assert "t    0210" in result.output and "11   000042" in result.output
    assert "625094******7890" in result.output and PAN not in result.output
    assert "MAC ok" in result.output
    assert fake.mac_bad == 0


def test_possim_timeout_is_one_line() -> None:
    switch = FakeSwitch(answer=False)
    switch.start()
    try:
        result = CliRunner().invoke(possim.main, ["--port", str(switch.port), "--timeout-s", "0.3"])
    finally:
        switch.stop()
    assert result.exit_code == 1
    assert result.output.strip() == "possim: no response within 0.3s"


def test_possim_connection_refused() -> None:
    result = CliRunner().invoke(possim.main, ["--port", "1", "--timeout-s", "1"])
    assert result.exit_code == 1 and result.output.startswith("possim: cannot connect")


def test_possim_bad_options() -> None:
    result = CliRunner().invoke(possim.main, ["--mac-key", "abcd"])
    assert result.exit_code == 2 and "16-byte key" in result.output


# --- the tools' doctests (tools/ is outside pytest's doctest paths) ------------------------------


@pytest.mark.parametrize("module", [_kinds, _mac, _msg, _wire, isodump, loadgen, possim, _stats],
                         ids=lambda m: m.__name__)
def test_tools_doctests(module: object) -> None:
    import doctest

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0
