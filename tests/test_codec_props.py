"""Codec properties: any well-formed message round-trips; MAC placement is stable."""

from __future__ import annotations

import iso8583
from hypothesis import given, settings
from hypothesis import strategies as st

from specs.fastcodec import FastCodec
from switch import codec, mac

ASCII = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=40)
DIGITS = "0123456789"


def fixed(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=n, max_size=n)


FIELDS: dict[str, st.SearchStrategy[str]] = {
    "2": st.text(alphabet=DIGITS, min_size=12, max_size=19),
    "3": fixed(6), "4": fixed(12), "7": fixed(10), "11": fixed(6), "12": fixed(6), "13": fixed(4),
    "22": fixed(3), "25": fixed(2), "37": st.text(alphabet=DIGITS + "ABC", min_size=12, max_size=12),
    "38": fixed(6), "39": fixed(2), "41": st.text(alphabet="ABCDEF12 ", min_size=8, max_size=8),
    "42": st.text(alphabet="ABC123 ", min_size=15, max_size=15), "48": ASCII, "49": fixed(3),
    "54": st.text(alphabet=DIGITS + "CD", max_size=60), "60": fixed(6), "70": fixed(3), "74": fixed(10),
    "90": fixed(42),
}


@st.composite
def messages(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=len(FIELDS)))
    msg = {"t": draw(st.sampled_from(["0200", "0210", "0400", "0800", "0810", "0500"]))}
    for name in names:
        msg[name] = draw(FIELDS[name])
    return msg


@settings(max_examples=150, deadline=None)
@given(msg=messages(), spec_name=st.sampled_from(["pos", "mis"]))
def test_round_trip(msg: dict[str, str], spec_name: str) -> None:
    spec = codec.load_spec(spec_name)
    raw = codec.encode(msg, spec)
    back = codec.decode(raw, spec)
    assert {k: v for k, v in back.items() if k not in ("p", "1")} == msg
    assert codec.encode(back, spec) == raw, "encoding is deterministic (replays are byte for byte)"
    assert codec.read_mti(raw) == msg["t"]


@settings(max_examples=100, deadline=None)
@given(msg=messages(), spec_name=st.sampled_from(["pos", "mis"]), alg=st.sampled_from(list(mac.ALGORITHMS)))
def test_mac_covers_everything_before_it(msg: dict[str, str], spec_name: str, alg: str) -> None:
    spec = codec.load_spec(spec_name)
    key = bytes(range(16))
    raw = codec.encode_with_mac(msg, spec, lambda data: mac.compute(alg, key, data))
    back = codec.decode(raw, spec)
    where = codec.mac_field(msg)
    assert where in back and ("128" if "1" in back else "64") == where
    got = codec.mac_from_value(back[where])
    assert got is not None
    assert mac.verify(alg, key, codec.mac_input(raw, spec, where), got)
    if spec_name == "mis":
        assert back[where] == back[where].upper()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), spec_name=st.sampled_from(["pos", "mis"]))
def test_garbage_raises_codec_error_only(data: bytes, spec_name: str) -> None:
    spec = codec.load_spec(spec_name)
    try:
        codec.decode(data, spec)
    except codec.CodecError as exc:
        assert exc.field is None or isinstance(exc.field, str)
        assert all(isinstance(v, str) for v in exc.partial.values())


# ---------------------------------------------------------------- fields the spec does not define


def with_tertiary(raw: bytes, spec_name: str, numbers: set[int], tail: bytes) -> bytes:
    """``raw`` (carrying a secondary bitmap) with bit 65 set and a tertiary bitmap naming ``numbers``."""
    width = 8 if spec_name == "pos" else 16
    bits = sum(1 << (192 - n) for n in numbers).to_bytes(8, "big")
    secondary = raw[4 + width:4 + 2 * width]
    if spec_name == "pos":
        secondary, tertiary = bytes([secondary[0] | 0x80]) + secondary[1:], bits
    else:
        secondary, tertiary = b"%02X" % (int(secondary[:2], 16) | 0x80) + secondary[2:], bits.hex().upper().encode()
    return raw[:4 + width] + secondary + tertiary + raw[4 + 2 * width:] + tail


@settings(max_examples=150, deadline=None)
@given(msg=messages(), spec_name=st.sampled_from(["pos", "mis"]),
       numbers=st.sets(st.integers(129, 192), min_size=1, max_size=4), tail=st.binary(max_size=20))
def test_field_above_128_is_a_codec_error_with_what_came_before(msg: dict[str, str], spec_name: str,
                                                                numbers: set[int], tail: bytes) -> None:
    spec = codec.load_spec(spec_name)
    msg = {**msg, "70": "301"}  # a secondary bitmap
    raw = with_tertiary(codec.encode(msg, spec), spec_name, numbers, tail)
    try:
        codec.decode(raw, spec)
    except codec.CodecError as exc:
        assert exc.field == str(min(numbers))
        assert {k: v for k, v in exc.partial.items() if k not in ("p", "1")} == msg, "what a 30 echoes"
    else:
        raise AssertionError("decoded a field no spec defines")


@settings(max_examples=100, deadline=None)
@given(msg=messages(), spec_name=st.sampled_from(["pos", "mis"]), data=st.data())
def test_field_left_out_of_the_spec_is_a_codec_error(msg: dict[str, str], spec_name: str,
                                                     data: st.DataObject) -> None:
    numbers = sorted((k for k in msg if k.isdigit()), key=int)
    if not numbers:
        return
    missing = data.draw(st.sampled_from(numbers))
    raw = codec.encode(msg, codec.load_spec(spec_name))
    spec = codec.load_spec(spec_name)  # a new one: the codec compiles a spec once, by identity
    del spec[missing]
    try:
        codec.decode(raw, spec)
    except codec.CodecError as exc:
        assert exc.field == missing
        assert all(int(k) < int(missing) for k in exc.partial if k.isdigit() and k != "1")
        assert exc.partial.get("t") == msg["t"]
    else:
        raise AssertionError(f"decoded field {missing}, which the spec leaves out")
    try:
        codec.encode(msg, spec)
    except codec.CodecError as exc:
        assert exc.field == missing
    else:
        raise AssertionError(f"encoded field {missing}, which the spec leaves out")


def test_encode_field_above_128_is_a_codec_error() -> None:
    for name in ("131", "192"):
        try:
            codec.encode({"t": "0800", "11": "000001", name: "1"}, codec.load_spec("pos"))
        except codec.CodecError as exc:
            assert exc.field == name
        else:
            raise AssertionError(f"encoded field {name}")


# ---------------------------------------------------------------- the compiled spec agrees with pyiso8583

WILD_VALUE = st.one_of(
    ASCII, st.text(max_size=30), st.text(alphabet="0123456789abcdefABCDEF ", max_size=40),
    st.integers(), st.none(),
)
WILD_KEY = st.one_of(st.sampled_from(sorted(FIELDS) + ["52", "64", "65", "1", "p", "h", "128", "02", "0", "200"]),
                     st.text(max_size=4))


def _reference_encode(doc: dict[str, object], spec: codec.Spec) -> bytes | None:
    try:
        raw, _enc = iso8583.encode(dict(doc), spec)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - any refusal counts as "not encodable"
        return None
    return bytes(raw)


def _reference_decode(raw: bytes, spec: codec.Spec) -> dict[str, str] | None:
    try:
        doc, _enc = iso8583.decode(raw, spec)
    except Exception:  # noqa: BLE001
        return None
    return dict(doc)


@settings(max_examples=300, deadline=None)
@given(msg=messages(), extra=st.dictionaries(WILD_KEY, WILD_VALUE, max_size=4),
       spec_name=st.sampled_from(["pos", "mis"]))
def test_fast_encoder_is_pyiso8583_or_declines(msg: dict[str, str], extra: dict[str, object],
                                               spec_name: str) -> None:
    spec = codec.load_spec(spec_name)
    fast = FastCodec(spec)
    doc = {**msg, **extra}
    got = fast.encode(doc)  # type: ignore[arg-type]
    if got is not None:
        assert got == _reference_encode(doc, spec)
    if not extra:
        assert got is not None, "a plainly valid message is the fast path's"


@settings(max_examples=300, deadline=None)
@given(msg=messages(), spec_name=st.sampled_from(["pos", "mis"]), data=st.data())
def test_fast_decoder_is_pyiso8583_or_declines(msg: dict[str, str], spec_name: str, data: st.DataObject) -> None:
    spec = codec.load_spec(spec_name)
    fast = FastCodec(spec)
    raw = codec.encode(msg, spec)
    assert fast.decode(raw) == _reference_decode(raw, spec)
    # Mutations: a byte changed, bytes cut off or added; the fast path may decline, never differ.
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["set", "cut", "add"]))
        if what == "set" and mutated:
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
        elif what == "cut" and mutated:
            del mutated[data.draw(st.integers(0, len(mutated) - 1)):]
        else:
            mutated += data.draw(st.binary(min_size=1, max_size=8))
    got = fast.decode(bytes(mutated))
    if got is not None:
        assert got == _reference_decode(bytes(mutated), spec)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), spec_name=st.sampled_from(["pos", "mis"]))
def test_fast_decoder_on_garbage(raw: bytes, spec_name: str) -> None:
    spec = codec.load_spec(spec_name)
    got = FastCodec(spec).decode(raw)
    if got is not None:
        assert got == _reference_decode(raw, spec)


# ---------------------------------------------------------------- duplicate keys and stored responses

ANY_TEXT = st.text(max_size=30)  # quotes, backslashes, control characters, non-ASCII


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.one_of(st.sampled_from(["t", "2", "3", "11", "41", "64", "p", "1"]), ANY_TEXT),
                              ANY_TEXT, max_size=12))
def test_content_hash_and_payload_are_the_json_module_s(fields: dict[str, str]) -> None:
    import hashlib
    import json

    from switch import dedup

    canon = {k: v for k, v in fields.items() if k not in codec.STRUCTURAL and k not in codec.MAC_FIELDS}
    reference = hashlib.sha256(json.dumps(sorted(canon.items()), separators=(",", ":")).encode()).digest()
    assert dedup.content_hash(fields) == reference, "stored hashes must keep matching"
    payload = json.dumps({"v": 1, "fields": canon}, separators=(",", ":"), sort_keys=True).encode()
    assert dedup.encode_payload(fields) == payload
    assert dedup.decode_payload(payload) == canon
