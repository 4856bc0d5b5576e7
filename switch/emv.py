"""Chip data (field 55): EMV BER-TLV, checked for structure, and what a dispute needs of it.

A purchase may carry the card's and terminal's EMV data objects (binary on the POS listener,
hexadecimal on MIS; the codec hands both over as hexadecimal). The switch checks that they form
well-built BER-TLV (else 30, field 55), never logs them, and keeps of an approved purchase only
:data:`DISPUTE_TAGS`: the application cryptogram and the data it was computed over, which
prove what the card approved. The PAN, track 2 equivalent data, the cardholder's name and the
expiry date (tags 5A, 57, 5F20, 5F24, 9F1F, 9F20, 56, 9F6B) are never kept.

>>> parse("9F2608A1B2C3D4E5F607089F360200019505008000E800")
[('9F26', 'A1B2C3D4E5F60708'), ('9F36', '0001'), ('95', '008000E800')]
>>> problem("9F2609A1B2")
'a length runs past the end of the data'
>>> dispute_data("5A0841111111111111119F360200019C0100")
{'9F36': '0001', '9C': '00'}
"""

from __future__ import annotations

from ledger.errors import SwitchdError

TLV_BYTES_MAX = 255  # field 55's bound on the wire
TAG_BYTES_MAX = 3
DEPTH_MAX = 4
# What a chargeback's evidence is made of (EMV Book 3 names): cryptogram, its information data,
# the issuer application data, ATC, unpredictable number, TVR, date, type, amounts, currency,
# country, AIP, CVM results, the AID and the card sequence number.
DISPUTE_TAGS = frozenset({"9F26", "9F27", "9F10", "9F36", "9F37", "95", "9A", "9C", "9F02", "9F03", "5F2A",
                          "9F1A", "82", "9F34", "84", "4F", "5F34", "9F33", "9F35"})


class TlvError(SwitchdError, ValueError):
    """Malformed BER-TLV; ``str()`` describes the structure, never the data."""


def _walk(data: bytes, depth: int, out: list[tuple[str, str]]) -> None:
    if depth > DEPTH_MAX:
        raise TlvError("constructed data objects nested too deep")
    i = 0
    while i < len(data):
        if data[i] in (0x00, 0xFF):  # padding between data objects (EMV Book 3, Annex B)
            i += 1
            continue
        start = i
        first = data[i]
        i += 1
        if first & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise TlvError("a tag runs past the end of the data")
                more = data[i] & 0x80
                i += 1
                if i - start > TAG_BYTES_MAX:
                    raise TlvError("a tag is longer than 3 bytes")
                if not more:
                    break
        tag = data[start:i].hex().upper()
        if i >= len(data):
            raise TlvError("a data object has no length")
        length = data[i]
        i += 1
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 2 or i + count > len(data):
                raise TlvError("a length is not well formed")
            length = int.from_bytes(data[i:i + count], "big")
            i += count
        if i + length > len(data):
            raise TlvError("a length runs past the end of the data")
        value = data[i:i + length]
        i += length
        if first & 0x20:
            _walk(value, depth + 1, out)
        else:
            out.append((tag, value.hex().upper()))


def parse(hex_value: str) -> list[tuple[str, str]]:
    """The primitive data objects (tag, value in hex) of field 55; TlvError when malformed."""
    try:
        data = bytes.fromhex(hex_value)
    except ValueError:
        raise TlvError("not hexadecimal") from None
    if not data or len(data) > TLV_BYTES_MAX:
        raise TlvError(f"must be 1..{TLV_BYTES_MAX} bytes")
    out: list[tuple[str, str]] = []
    _walk(data, 0, out)
    if not out:
        raise TlvError("holds no data object")
    return out


def problem(hex_value: str) -> str | None:
    """Why field 55 is not well-formed BER-TLV, or None."""
    try:
        parse(hex_value)
    except TlvError as exc:
        return str(exc)
    return None


def dispute_data(hex_value: str) -> dict[str, str]:
    """The data objects of field 55 that a dispute needs (see DISPUTE_TAGS), first of each tag."""
    kept: dict[str, str] = {}
    for tag, value in parse(hex_value):
        if tag in DISPUTE_TAGS and tag not in kept:
            kept[tag] = value
    return kept
