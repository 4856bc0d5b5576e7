"""Codec properties: any well-formed message round-trips; MAC placement is stable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
