"""Framing for the tools: length headers and the TPDU (specs/HOST-INTERFACE.md §1-2, transport and framing).

- ``nac2``: 2-byte unsigned big-endian length, then an optional 5-byte TPDU
  (0x60, destination, source), then the message. The length counts the TPDU.
- ``ascii4``: 4 ASCII decimal digits of length, then the message; a length of
  0 is a keep-alive.
- ``none``: the bare message (for decoding captures).

Written independently of ``switch/`` on purpose.

>>> frame(b"0800", "nac2").hex()
'000430383030'
>>> frame(b"0800", "nac2", tpdu=bytes.fromhex("6000010002")).hex()
'0009600001000230383030'
>>> frame(b"0800", "ascii4")
b'00040800'
>>> unframe(bytes.fromhex("00096000010002") + b"0800", "nac2", has_tpdu=True)
Frame(tpdu=b'`\\x00\\x01\\x00\\x02', message=b'0800')
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

FRAMINGS = ("none", "nac2", "ascii4")
TPDU_ID = 0x60
TPDU_BYTES = 5
FRAME_BYTES_MAX = 4096
_HEADER_BYTES = {"none": 0, "nac2": 2, "ascii4": 4}


class FrameError(ValueError):
    """A malformed frame; ``position`` is the byte offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at byte {position})")
        self.position = position


class Frame(NamedTuple):
    tpdu: bytes
    message: bytes


def header_bytes(framing: str) -> int:
    """Length of the length header for ``framing``.

    >>> header_bytes("nac2"), header_bytes("ascii4")
    (2, 4)
    """
    try:
        return _HEADER_BYTES[framing]
    except KeyError:
        raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}") from None


def make_tpdu(destination: int, source: int) -> bytes:
    """A TPDU: id 0x60, then 2-byte destination and source addresses.

    >>> make_tpdu(1, 2).hex()
    '6000010002'
    """
    return bytes([TPDU_ID]) + destination.to_bytes(2, "big") + source.to_bytes(2, "big")


def swap_tpdu(tpdu: bytes) -> bytes:
    """The TPDU a response carries: destination and source swapped.

    >>> swap_tpdu(bytes.fromhex("6000010002")).hex()
    '6000020001'
    """
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


def parse_tpdu_hex(text: str) -> bytes:
    """Parse a TPDU given as 10 hex characters; ValueError if it is not one.

    >>> parse_tpdu_hex("6000010002").hex()
    '6000010002'
    """
    try:
        tpdu = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"TPDU must be hexadecimal, got {text!r}") from None
    if len(tpdu) != TPDU_BYTES or tpdu[0] != TPDU_ID:
        raise ValueError(f"TPDU must be 5 bytes starting 60, got {text!r}")
    return tpdu


def frame(message: bytes, framing: str, tpdu: bytes = b"") -> bytes:
    """Put a length header (and TPDU, nac2 only) in front of ``message``."""
    header_bytes(framing)  # ValueError for an unknown framing
    if tpdu and framing == "ascii4":
        raise ValueError("a TPDU is only defined for nac2 framing")
    body = tpdu + message
    if framing == "none":
        return body
    if len(body) > FRAME_BYTES_MAX:
        raise ValueError(f"frame of {len(body)} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")
    if framing == "nac2":
        return len(body).to_bytes(2, "big") + body
    return b"%04d" % len(body) + body  # ascii4


def parse_length(header: bytes, framing: str) -> int:
    """Decode a length header; FrameError for digits that are not digits.

    >>> parse_length(b"\\x00\\x2a", "nac2"), parse_length(b"0042", "ascii4")
    (42, 42)
    """
    if framing == "nac2":
        return int.from_bytes(header, "big")
    if not header.isdigit():
        raise FrameError(f"ascii4 length header {header!r} is not 4 decimal digits", 0)
    return int(header)


def split_tpdu(body: bytes, has_tpdu: bool, offset: int = 0) -> Frame:
    """Split a frame body into (TPDU, message); FrameError on a bad TPDU."""
    if not has_tpdu:
        return Frame(b"", body)
    if len(body) < TPDU_BYTES:
        raise FrameError(f"frame of {len(body)} bytes is too short for a TPDU", offset)
    if body[0] != TPDU_ID:
        raise FrameError(f"TPDU id is 0x{body[0]:02X}, expected 0x60", offset)
    return Frame(body[:TPDU_BYTES], body[TPDU_BYTES:])


def unframe(data: bytes, framing: str, has_tpdu: bool = False) -> Frame:
    """Split one complete frame; FrameError (with the byte position) if it is not exactly one."""
    size = header_bytes(framing)
    if framing == "none":
        return split_tpdu(data, has_tpdu)
    if len(data) < size:
        raise FrameError(f"{len(data)} bytes is shorter than the {size}-byte length header", 0)
    length = parse_length(data[:size], framing)
    body = data[size:]
    if len(body) != length:
        raise FrameError(f"length header says {length} bytes, {len(body)} follow", 0)
    return split_tpdu(body, has_tpdu, offset=size)


async def read_frame(
    reader: asyncio.StreamReader, framing: str, has_tpdu: bool = False
) -> Frame:
    """Read the next frame that is not a keep-alive. Raises IncompleteReadError at EOF."""
    size = header_bytes(framing)
    while True:
        length = parse_length(await reader.readexactly(size), framing)
        if length == 0:
            continue  # keep-alive: nothing to hand up
        if length > FRAME_BYTES_MAX:
            raise FrameError(f"frame length {length} exceeds {FRAME_BYTES_MAX}", 0)
        return split_tpdu(await reader.readexactly(length), has_tpdu, offset=size)


class FrameReader:
    """Frames from a stream read in large chunks: one await per chunk, not two per frame.

    >>> r = FrameReader("nac2")
    >>> [f.message for f in r.feed(b"\\x00\\x02hi\\x00\\x00\\x00\\x03yo")], r.pending
    ([b'hi'], 4)
    >>> [f.message for f in r.feed(b"u")]
    [b'you']
    """

    def __init__(self, framing: str, has_tpdu: bool = False) -> None:
        if framing == "none":
            raise ValueError("a stream of unframed messages cannot be split")
        self.size = header_bytes(framing)
        self.framing = framing
        self.has_tpdu = has_tpdu
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Every complete frame ``data`` completes (keep-alives skipped); FrameError on a bad one."""
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        start = 0
        while len(buf) - start >= self.size:
            length = parse_length(bytes(buf[start:start + self.size]), self.framing)
            if length > FRAME_BYTES_MAX:
                raise FrameError(f"frame length {length} exceeds {FRAME_BYTES_MAX}", start)
            end = start + self.size + length
            if end > len(buf):
                break
            if length:
                frames.append(split_tpdu(bytes(buf[start + self.size:end]), self.has_tpdu, offset=start))
            start = end
        del buf[:start]
        return frames
