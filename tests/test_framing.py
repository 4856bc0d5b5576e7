"""The framing codecs alone: nac2 (with and without TPDU) and ascii4."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.framing import (
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame,
    encode_request_frame,
    swap_tpdu,
)

TPDU = bytes.fromhex("6000120034")


def test_nac2_round_trip_and_split_reads() -> None:
    d = FrameDecoder("nac2", tpdu=False, frame_bytes_max=4096)
    data = encode_request_frame("nac2", b"0800abc") + encode_request_frame("nac2", b"0200xyz")
    got: list[Frame] = []
    for i in range(len(data)):  # one byte at a time
        got += d.feed(data[i:i + 1])
        assert d.pending_bytes == (0 if i in (8, 17) else (i + 1) - 9 * len(got))
    assert [f.message for f in got] == [b"0800abc", b"0200xyz"]
    assert d.pending_bytes == 0


def test_nac2_tpdu_counted_in_length_and_swapped_in_response() -> None:
    d = FrameDecoder("nac2", tpdu=True, frame_bytes_max=4096)
    wire = encode_request_frame("nac2", b"0800", TPDU)
    assert wire[:2] == (9).to_bytes(2, "big")
    (frame,) = d.feed(wire)
    assert frame.tpdu == TPDU and frame.message == b"0800"
    resp = encode_frame("nac2", b"0810", frame.tpdu)
    assert resp == (9).to_bytes(2, "big") + bytes.fromhex("6000340012") + b"0810"
    assert swap_tpdu(swap_tpdu(TPDU)) == TPDU


def test_ascii4_and_keepalive() -> None:
    d = FrameDecoder("ascii4", tpdu=False, frame_bytes_max=4096)
    frames = d.feed(b"0000" + b"0004abcd" + b"0000")
    assert [f.keepalive for f in frames] == [True, False, True]
    assert frames[1].message == b"abcd"
    assert encode_frame("ascii4", b"x" * 12) == b"0012" + b"x" * 12


@pytest.mark.parametrize("framing,tpdu,data,reason", [
    ("nac2", False, b"\x10\x01", "oversize"),
    ("ascii4", False, b"4097", "oversize"),
    ("ascii4", False, b"00a1", "bad_header"),
    ("ascii4", False, b"-001", "bad_header"),
    ("nac2", True, b"\x00\x03\x60\x00\x00", "bad_tpdu"),
    ("nac2", True, b"\x00\x06\x70\x00\x01\x00\x02X", "bad_tpdu"),
])
def test_bad_frames_raise(framing: str, tpdu: bool, data: bytes, reason: str) -> None:
    d = FrameDecoder(framing, tpdu=tpdu, frame_bytes_max=4096)
    with pytest.raises(FrameError) as exc:
        d.feed(data)
    assert exc.value.reason == reason


def test_limits_and_arguments() -> None:
    with pytest.raises(ValueError):
        FrameDecoder("nac3", tpdu=False, frame_bytes_max=10)
    with pytest.raises(ValueError):
        FrameDecoder("ascii4", tpdu=True, frame_bytes_max=10)
    with pytest.raises(FrameError):
        encode_frame("ascii4", b"x" * 10_000)
    # exactly at the limit is fine, one above is not
    d = FrameDecoder("nac2", tpdu=False, frame_bytes_max=10)
    assert d.feed(encode_request_frame("nac2", b"x" * 10))[0].message == b"x" * 10
    with pytest.raises(FrameError):
        d.feed(encode_request_frame("nac2", b"x" * 11))


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
       cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20),
       framing=st.sampled_from(["nac2", "ascii4", "nac2+tpdu"]))
def test_any_split_gives_the_same_frames(messages: list[bytes], cuts: list[int], framing: str) -> None:
    name, tpdu = ("nac2", TPDU) if framing == "nac2+tpdu" else (framing, None)
    data = b"".join(encode_request_frame(name, m, tpdu) for m in messages)
    d = FrameDecoder(name, tpdu=tpdu is not None, frame_bytes_max=4096)
    got: list[Frame] = []
    pos = 0
    for n in cuts:
        got += d.feed(data[pos:pos + n])
        pos += n
    got += d.feed(data[pos:])
    assert [f.message for f in got] == messages
    assert all(f.tpdu == tpdu for f in got)
    assert d.pending_bytes == 0


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600), framing=st.sampled_from(["nac2", "ascii4"]), tpdu=st.booleans())
def test_garbage_never_raises_anything_but_frame_error(data: bytes, framing: str, tpdu: bool) -> None:
    d = FrameDecoder(framing, tpdu=tpdu and framing == "nac2", frame_bytes_max=256)
    try:
        for f in d.feed(data):
            assert len(f.message) <= 256
    except FrameError:
        pass
    assert d.pending_bytes <= len(data)
