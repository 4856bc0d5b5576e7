"""specs/HOST-INTERFACE.md must not drift from the code.

Every ```hex-frame block is unframed, decoded with pyiso8583 and the project's
specs, and compared with the ```fields block after it; its MAC is recomputed
with switch.mac, and ```mac-steps intermediates with cipher calls written out
here. The tools' encoder must produce the same bytes from the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import iso8583
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import specs
from ledger.loyalty.rules import luhn_ok
from switch import mac
from tools import _msg

DOC = Path(specs.__file__).resolve().parent / "HOST-INTERFACE.md"
BLOCK = re.compile(r"^```(\S+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
REQUIRED = {
    "pos-signon": ("nac2", "no", None),
    "pos-signon-tpdu": ("nac2", "yes", None),
    "mis-echo": ("ascii4", "no", None),
    "pos-purchase-cmac": ("nac2", "no", "cmac-aes"),
    "pos-purchase-x919": ("nac2", "no", "x919"),
    "pos-inquiry-expiry-response-cmac": ("nac2", "no", "cmac-aes"),
}
MANDATORY = {
    "0800": {"7", "11", "41", "70"},
    "0810": {"7", "11", "39", "41", "70"},
    "0200": {"2", "3", "4", "7", "11", "41", "42"},
    "0210": {"3", "4", "7", "11", "39", "41", "42"},
}


@dataclass
class Example:
    name: str
    attrs: dict[str, str]
    hex_text: str
    fields: dict[str, str]


def _attrs(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split())


def _kv(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in body.splitlines():
        if line.strip():
            key, _, value = line.partition(" = ")
            out[key.strip()] = value
    return out


def _blocks() -> list[tuple[str, dict[str, str], str]]:
    text = DOC.read_text(encoding="utf-8")
    return [(m.group(1), _attrs(m.group(2)), m.group(3)) for m in BLOCK.finditer(text)]


def _examples() -> list[Example]:
    blocks = _blocks()
    examples: list[Example] = []
    for i, (tag, attrs, body) in enumerate(blocks):
        if tag != "hex-frame":
            continue
        assert i + 1 < len(blocks) and blocks[i + 1][0] == "fields", f"{attrs.get('name')}: no fields block"
        examples.append(Example(attrs["name"], attrs, body, _kv(blocks[i + 1][2])))
    return examples


EXAMPLES = _examples()
BY_NAME = {e.name: e for e in EXAMPLES}


@dataclass
class Unframed:
    length: int
    tpdu: bytes
    message: bytes


def _unframe(example: Example) -> Unframed:
    data = bytes.fromhex("".join(example.hex_text.split()))
    framing = example.attrs["framing"]
    header = 2 if framing == "nac2" else 4
    length = int.from_bytes(data[:2], "big") if framing == "nac2" else int(data[:4].decode("ascii"))
    body = data[header:]
    assert length == len(body), f"{example.name}: header says {length}, {len(body)} bytes follow"
    if example.attrs["tpdu"] == "yes":
        assert body[0] == 0x60, f"{example.name}: TPDU id"
        return Unframed(length, body[:5], body[5:])
    return Unframed(length, b"", body)


def test_doc_has_the_required_examples() -> None:
    for name, (framing, tpdu, alg) in REQUIRED.items():
        assert name in BY_NAME, f"missing example {name}"
        attrs = BY_NAME[name].attrs
        assert (attrs["framing"], attrs["tpdu"], attrs.get("mac-alg")) == (framing, tpdu, alg)
    assert len(BY_NAME) == len(EXAMPLES), "example names must be unique"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_decodes_to_its_fields(example: Example) -> None:
    got = _unframe(example)
    listed = dict(example.fields)
    assert int(listed.pop("length")) == got.length
    if got.tpdu:
        assert listed.pop("tpdu") == got.tpdu.hex().upper()
    else:
        assert "tpdu" not in listed
    spec = specs.load(example.attrs["spec"])
    decoded, _enc = iso8583.decode(got.message, spec)
    assert set(decoded) == set(listed), f"{example.name}: fields differ"
    for key, value in listed.items():
        if spec[key]["data_enc"] == "b" or key in ("p", "1", "64", "128"):
            assert decoded[key].upper() == value.upper(), f"{example.name}: field {key}"
        else:
            assert decoded[key] == value, f"{example.name}: field {key}"
    if example.attrs["spec"] == "mis":
        assert got.message[4:20] == got.message[4:20].upper(), "MIS hex is sent upper case"
    assert MANDATORY.get(decoded["t"], set()) <= set(decoded), f"{example.name}: mandatory fields"
    if "2" in decoded:
        assert luhn_ok(decoded["2"])


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_mac(example: Example) -> None:
    got = _unframe(example)
    decoded, _enc = iso8583.decode(got.message, specs.load(example.attrs["spec"]))
    present = [f for f in ("64", "128") if f in decoded]
    alg = example.attrs.get("mac-alg")
    if alg is None:
        assert not present, f"{example.name}: MAC without mac-alg"
        assert decoded["t"][:2] == "08" or "39" in decoded
        return
    assert decoded["t"][:2] != "08", "network management is never MACed"
    assert present == ["128" if "1" in decoded else "64"]
    key = bytes.fromhex(example.attrs["mac-key"])
    size = 8 if example.attrs["spec"] == "pos" else 16
    carried = got.message[-size:] if size == 8 else bytes.fromhex(got.message[-size:].decode("ascii"))
    if size == 16:
        assert got.message[-16:] == got.message[-16:].upper()
    assert mac.compute(alg, key, got.message[:-size]) == carried
    assert carried == bytes.fromhex(decoded[present[0]])


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_tools_encode_the_same_bytes(example: Example) -> None:
    got = _unframe(example)
    spec_name = example.attrs["spec"]
    decoded, _enc = iso8583.decode(got.message, specs.load(spec_name))
    fields = {k: v for k, v in decoded.items() if k not in ("p", "1")}
    alg = example.attrs.get("mac-alg", "")
    key = bytes.fromhex(example.attrs["mac-key"]) if alg else b""
    assert _msg.build(fields, spec_name, alg, key) == got.message


def test_signon_response_swaps_tpdu() -> None:
    request = _unframe(BY_NAME["pos-signon-tpdu"]).tpdu
    response = _unframe(BY_NAME["pos-signon-response-tpdu"]).tpdu
    assert response == request[:1] + request[3:5] + request[1:3]


# --- intermediate values of the MAC walkthroughs, computed from the standards -------------------


def _aes(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _dbl(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n ^ 0x87) & ((1 << 128) - 1)
    return n.to_bytes(16, "big")


def _des(key8: bytes, block: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(block) + ctx.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _mac_steps() -> list[tuple[str, dict[str, str]]]:
    return [(a["name"], _kv(body)) for tag, a, body in _blocks() if tag == "mac-steps"]


def test_mac_walkthroughs_exist() -> None:
    names = {name for name, _steps in _mac_steps()}
    assert {"pos-purchase-cmac", "pos-purchase-x919"} <= names


@pytest.mark.parametrize(("name", "steps"), _mac_steps(), ids=[n for n, _ in _mac_steps()])
def test_mac_walkthrough(name: str, steps: dict[str, str]) -> None:
    example = BY_NAME[name]
    message = _unframe(example).message
    size = 8 if example.attrs["spec"] == "pos" else 16
    data = message[:-size]
    key = bytes.fromhex(example.attrs["mac-key"])
    if example.attrs["mac-alg"] == "cmac-aes":
        big_l = _aes(key, bytes(16))
        k1 = _dbl(big_l)
        k2 = _dbl(k1)
        assert steps["L"] == big_l.hex().upper()
        assert steps["K1"] == k1.hex().upper()
        assert steps["K2"] == k2.hex().upper()
        blocks = [data[i : i + 16] for i in range(0, len(data), 16)] or [b""]
        last = blocks[-1]
        blocks[-1] = _xor(last, k1) if len(last) == 16 else _xor(last + b"\x80" + bytes(15 - len(last)), k2)
        state = bytes(16)
        for block in blocks:
            state = _aes(key, _xor(state, block))
        assert steps["cmac"] == state.hex().upper()
        assert steps["mac"] == state[:8].hex().upper()
    else:
        kl, kr = key[:8], key[8:]
        padded = data + bytes(-len(data) % 8) if data else bytes(8)
        assert int(steps["padded-length"]) == len(padded)
        state = bytes(8)
        for i in range(0, len(padded), 8):
            state = _des(kl, _xor(state, padded[i : i + 8]))
        assert steps["cbc-kl"] == state.hex().upper()
        middle = _des(kr, state, decrypt=True)
        assert steps["decrypt-kr"] == middle.hex().upper()
        assert steps["mac"] == _des(kl, middle).hex().upper()
    assert steps["mac"] == mac.compute(example.attrs["mac-alg"], key, data).hex().upper()
