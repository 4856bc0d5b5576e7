"""A spec compiled into a fast ISO 8583 encoder/decoder for the common, well-formed case.

pyiso8583 is the reference: it reads any spec and explains every error. It
also interprets its spec dict on every field of every message, which is most
of a switch's per-message CPU. :class:`FastCodec` compiles one spec (ASCII
MTI, binary or hexadecimal-ASCII bitmaps, fixed/LLVAR/LLLVAR fields with
ASCII lengths, ASCII or binary data: what ``pos.json`` and ``mis.json`` use)
into tables, and handles the messages that are plainly valid.

It never decides anything pyiso8583 would decide differently: whenever a
message or a document is not plainly valid (a non-digit length, a value too
long, non-ASCII data, lower-case hexadecimal, a tertiary bitmap, an unknown
key...) it returns None and the caller asks pyiso8583, which accepts or
rejects it with its own message. tests/test_codec_props.py checks, with
random and mutated messages, that both give the same answers.

>>> import specs
>>> fast = FastCodec(specs.load("pos"))
>>> raw = fast.encode({"t": "0800", "7": "0101120000", "11": "000001", "41": "T1      ", "70": "301"})
>>> fast.decode(raw)["70"], fast.decode(raw + b"x") is None
('301', True)
"""

from __future__ import annotations

import re
from typing import Any

_HEX_UPPER = re.compile(rb"[0-9A-F]{16}")
_HEX_ANY = re.compile(r"(?:[0-9A-Fa-f]{2})*")
# For each byte value, the 1-based positions (within the byte) of its set bits.
_BITS = [tuple(bit + 1 for bit in range(8) if value >> (7 - bit) & 1) for value in range(256)]
_FIELD_KEYS = {"data_enc", "len_enc", "len_type", "max_len", "desc"}


class FastCodec:
    """Encode/decode plainly valid messages of one spec; None means "ask pyiso8583"."""

    def __init__(self, spec: dict[str, dict[str, Any]]) -> None:
        # field number -> (key, length digits, max length, binary data)
        self._fields: dict[int, tuple[str, int, int, bool]] = {}
        self._by_key: dict[str, tuple[int, int, int, bool]] = {}
        self.supported = self._compile(spec)

    def _compile(self, spec: dict[str, dict[str, Any]]) -> bool:
        try:
            t, p, s, h = spec["t"], spec["p"], spec["1"], spec["h"]
        except KeyError:
            return False
        if (t.get("data_enc"), t.get("len_type"), t.get("max_len")) != ("ascii", 0, 4):
            return False
        if h.get("max_len", 0) > 0:
            return False
        for bitmap in (p, s):
            if (bitmap.get("data_enc"), bitmap.get("len_type")) not in (("b", 0), ("ascii", 0)):
                return False
        if p["data_enc"] != s["data_enc"]:
            return False
        self._binary_bitmap = p["data_enc"] == "b"
        for number in range(2, 129):
            if number == 65:  # the tertiary bitmap indicator: never a field here
                continue
            f = spec.get(str(number))
            if f is None or set(f) - _FIELD_KEYS:
                return False
            if f.get("data_enc") not in ("ascii", "b") or f.get("len_enc") != "ascii":
                return False
            length_digits, max_len = f.get("len_type"), f.get("max_len")
            if length_digits not in (0, 1, 2, 3, 4) or not isinstance(max_len, int) or max_len < 0:
                return False
            if length_digits and max_len >= 10**length_digits:
                return False
            entry = (str(number), length_digits, max_len, f["data_enc"] == "b")
            self._fields[number] = entry
            self._by_key[entry[0]] = (number, length_digits, max_len, entry[3])
        return True

    # ------------------------------------------------------------------ decode

    def decode(self, raw: bytes) -> dict[str, str] | None:
        """The message's fields as pyiso8583 decodes them, or None (not plainly valid: ask it)."""
        if not self.supported:
            return None
        mti = raw[:4]
        if len(mti) != 4 or not mti.isascii():
            return None
        doc: dict[str, str] = {"t": mti.decode("ascii")}
        idx = 4
        primary, idx = self._bitmap(raw, idx)
        if primary is None:
            return None
        doc["p"] = primary.hex().upper()
        numbers = [n for i, byte in enumerate(primary) if byte for n in [b + 8 * i for b in _BITS[byte]]]
        if numbers and numbers[0] == 1:
            secondary, idx = self._bitmap(raw, idx)
            if secondary is None or secondary[0] & 0x80:  # no bitmap, or a tertiary one
                return None
            doc["1"] = secondary.hex().upper()
            numbers = numbers[1:] + [n for i, byte in enumerate(secondary) if byte
                                     for n in [b + 8 * i + 64 for b in _BITS[byte]]]
        fields = self._fields
        end = len(raw)
        for number in numbers:
            key, length_digits, max_len, binary = fields[number]
            if length_digits:
                prefix = raw[idx:idx + length_digits]
                if len(prefix) != length_digits or not prefix.isdigit():
                    return None
                size = int(prefix)
                if size > max_len:
                    return None
                idx += length_digits
            else:
                size = max_len
            if idx + size > end:
                return None
            data = raw[idx:idx + size]
            idx += size
            if binary:
                doc[key] = data.hex().upper()
            elif data.isascii():
                doc[key] = data.decode("ascii")
            else:
                return None
        return doc if idx == end else None

    def _bitmap(self, raw: bytes, idx: int) -> tuple[bytes | None, int]:
        if self._binary_bitmap:
            part = raw[idx:idx + 8]
            return (part if len(part) == 8 else None), idx + 8
        text = raw[idx:idx + 16]
        if not _HEX_UPPER.fullmatch(text):
            return None, idx + 16
        return bytes.fromhex(text.decode("ascii")), idx + 16

    # ------------------------------------------------------------------ encode

    def encode(self, fields: dict[str, Any]) -> bytes | None:
        """The message as pyiso8583 encodes ``fields`` (bitmaps computed), or None (ask it).

        Keys ``p``, ``1`` and ``h`` are structure and ignored, as pyiso8583 ignores them.
        Values that are not str are declined here, not assumed away (``Any``: a caller may hand
        in anything a field dictionary can hold).
        """
        if not self.supported:
            return None
        by_key = self._by_key
        parts: list[tuple[int, bytes]] = []
        mti = None
        for key, value in fields.items():
            spec = by_key.get(key)
            if spec is None:
                if key == "t":
                    mti = value
                    continue
                if key in ("p", "1", "h"):
                    continue
                return None
            if type(value) is not str:
                return None
            number, length_digits, max_len, binary = spec
            if binary:
                if not _HEX_ANY.fullmatch(value):
                    return None
                data = bytes.fromhex(value)
            elif value.isascii():
                data = value.encode("ascii")
            else:
                return None
            size = len(data)
            if length_digits:
                if size > max_len:
                    return None
                data = str(size).zfill(length_digits).encode("ascii") + data
            elif size != max_len:
                return None
            parts.append((number, data))
        if type(mti) is not str or len(mti) != 4 or not mti.isascii():
            return None
        parts.sort()
        bitmap = 0
        secondary = parts and parts[-1][0] > 64
        width = 128 if secondary else 64
        for number, _ in parts:
            bitmap |= 1 << (width - number)
        if secondary:
            bitmap |= 1 << 127
        bitmap_bytes = bitmap.to_bytes(width // 8, "big")
        if not self._binary_bitmap:
            bitmap_bytes = bitmap_bytes.hex().upper().encode("ascii")
        return b"".join([mti.encode("ascii"), bitmap_bytes, *[data for _, data in parts]])
