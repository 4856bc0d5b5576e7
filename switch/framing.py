"""Framing: how ISO 8583 messages are cut out of a TCP byte stream.

Sans-IO codecs, tested alone: a :class:`FrameDecoder` is fed bytes as they
arrive and hands back complete :class:`Frame` objects; :func:`encode_frame`
wraps a response. Two framings (specs/HOST-INTERFACE.md §2):

- ``nac2``: 2-byte unsigned big-endian length, then the message. With
  ``tpdu=True`` a 5-byte TPDU (0x60, destination, source) follows the header;
  the length counts it. The response carries it with destination and source
  swapped.
- ``ascii4``: 4 ASCII decimal digits of length, then the message.

A frame of length 0 is a keep-alive in both framings. A length above
``frame_bytes_max`` or a malformed header raises :class:`FrameError`: the
stream can no longer be trusted, so the caller closes the connection.

>>> d = FrameDecoder("nac2", tpdu=True, frame_bytes_max=4096)
>>> frames = d.feed(bytes.fromhex("0009 6000120034") + b"0800")
>>> frames[0].message, frames[0].tpdu.hex()
(b'0800', '6000120034')
>>> encode_frame("nac2", b"0810", tpdu=frames[0].tpdu).hex()
'0009600034001230383130'
>>> d2 = FrameDecoder("ascii4", tpdu=False, frame_bytes_max=4096)
>>> [f.keepalive for f in d2.feed(b"00000004ab")], d2.feed(b"cd")[0].message
([True], b'abcd')
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import SwitchdError

FRAMINGS = ("nac2", "ascii4")
TPDU_BYTES = 5
TPDU_ID = 0x60
HEADER_BYTES = {"nac2": 2, "ascii4": 4}
# The largest length each header can express: a bound no config may exceed.
LENGTH_MAX = {"nac2": 0xFFFF, "ascii4": 9999}


class FrameError(SwitchdError):
    """The stream is not framed as agreed; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(init=False, unsafe_hash=True)  # own __init__, not frozen: see ledger.commands
class Frame:
    """One complete frame: the ISO message bytes, and the TPDU when the listener uses one."""

    message: bytes
    tpdu: bytes | None

    def __init__(self, message: bytes, tpdu: bytes | None = None) -> None:
        self.message = message
        self.tpdu = tpdu

    @property
    def keepalive(self) -> bool:
        """A zero-length frame: it resets the idle timer and is not answered."""
        return not self.message and self.tpdu is None


def swap_tpdu(tpdu: bytes) -> bytes:
    """The response TPDU: same id, destination and source swapped.

    >>> swap_tpdu(bytes.fromhex("6000120034")).hex()
    '6000340012'
    """
    assert len(tpdu) == TPDU_BYTES, "a TPDU is exactly 5 bytes"
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


def _header(framing: str, length: int) -> bytes:
    if not 0 <= length <= LENGTH_MAX[framing]:
        raise FrameError("oversize", f"length {length} does not fit a {framing} header")
    if framing == "nac2":
        return length.to_bytes(2, "big")
    return b"%04d" % length


def encode_frame(framing: str, message: bytes, tpdu: bytes | None = None) -> bytes:
    """Frame a response. ``tpdu`` is the *request's* TPDU; it is swapped here.

    >>> encode_frame("ascii4", b"0810").decode()
    '00040810'
    """
    if framing not in HEADER_BYTES:
        raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
    prefix = swap_tpdu(tpdu) if tpdu is not None else b""
    return _header(framing, len(prefix) + len(message)) + prefix + message


def encode_request_frame(framing: str, message: bytes, tpdu: bytes | None = None) -> bytes:
    """Frame a request (terminal side): the TPDU goes out as given, unswapped.

    >>> encode_request_frame("nac2", b"08", bytes.fromhex("6000120034")).hex()
    '000760001200343038'
    """
    prefix = tpdu or b""
    return _header(framing, len(prefix) + len(message)) + prefix + message


class FrameDecoder:
    """Incremental decoder for one connection.

    ``feed`` returns every frame completed by the new bytes (possibly none).
    ``pending_bytes`` says how much of an unfinished frame is buffered, which
    is what the slow-loris timer watches. Buffering is bounded: at most one
    frame (``frame_bytes_max`` plus header) is kept beyond what ``feed``
    returns, plus whatever the last read delivered.
    """

    def __init__(self, framing: str, tpdu: bool, frame_bytes_max: int) -> None:
        if framing not in HEADER_BYTES:
            raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
        if tpdu and framing != "nac2":
            raise ValueError("a TPDU is only defined for nac2 framing")
        self.framing = framing
        self.tpdu = tpdu
        self.frame_bytes_max = frame_bytes_max
        self._header_bytes = HEADER_BYTES[framing]
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of a frame started but not finished."""
        return len(self._buf)

    def _length(self, header: bytes) -> int:
        if self.framing == "nac2":
            return int.from_bytes(header, "big")
        if not header.isdigit():
            raise FrameError("bad_header", f"length header {header!r} is not 4 ASCII digits")
        return int(header)

    def next_frame(self) -> Frame | None:
        """Take one complete frame out of the buffer, or None if there is none yet."""
        hb = self._header_bytes
        if len(self._buf) < hb:
            return None
        length = self._length(bytes(self._buf[:hb]))
        if length > self.frame_bytes_max:
            raise FrameError("oversize", f"frame of {length} bytes exceeds frame_bytes_max {self.frame_bytes_max}")
        if length == 0:
            del self._buf[:hb]
            return Frame(b"", None)
        if self.tpdu and length < TPDU_BYTES:
            raise FrameError("bad_tpdu", f"frame of {length} bytes cannot hold a {TPDU_BYTES}-byte TPDU")
        if len(self._buf) < hb + length:
            return None
        body = bytes(self._buf[hb:hb + length])
        del self._buf[:hb + length]
        if not self.tpdu:
            return Frame(body, None)
        if body[0] != TPDU_ID:
            raise FrameError("bad_tpdu", f"TPDU id byte is 0x{body[0]:02x}, expected 0x{TPDU_ID:02x}")
        return Frame(body[TPDU_BYTES:], body[:TPDU_BYTES])

    def push(self, data: bytes) -> None:
        """Buffer bytes without extracting frames (see ``next_frame``)."""
        self._buf += data

    def feed(self, data: bytes) -> list[Frame]:
        """Buffer ``data`` and return every frame it completes, in order."""
        self.push(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames
