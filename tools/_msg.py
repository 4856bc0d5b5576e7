"""Build, MAC, decode and display ISO 8583 messages for the tools.

Uses only pyiso8583 and the JSON specs: the tools must not share the
daemon's codec. Field values are pyiso8583's decoded form: strings, with
binary fields (POS 52/64/128) as hexadecimal text.

MAC placement (specs/HOST-INTERFACE.md §9.2): the MAC is field 64, or 128 when a secondary
bitmap is present; it is always the last field. Encode with the MAC field
present and zero, MAC every byte before it, then put the MAC in.

>>> raw = build({"t": "0200", "3": "000000", "11": "000001"}, "pos", "x919", bytes(16))
>>> check_mac(raw, "pos", "x919", bytes(16))
True
>>> mask_pan("6250941234567890")
'625094******7890'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import iso8583

import specs
from specs.fastcodec import FastCodec
from specs.vocabulary import MAC_FIELDS, Fields
from specs.vocabulary import response_mti as response_mti  # the tools' (one definition, in specs)
from tools import _mac

SPEC_NAMES = ("pos", "mis")
# Shown by length only: extended PAN (34), tracks 2, 3 and 1 (35, 36, 45), PIN block (52),
# ICC data (55).
REDACTED_FIELDS = frozenset({"34", "35", "36", "45", "52", "55", "110"})
PAN_MASK_DIGITS_MIN = 13  # below this, first 6 + last 4 would show most of the number
_SPECS: dict[str, dict[str, dict[str, Any]]] = {}
_FAST: dict[str, FastCodec] = {}  # the specs compiled (specs.fastcodec), for the load generator


def spec(name: str) -> dict[str, dict[str, Any]]:
    """The named spec, loaded once (the tools never modify it)."""
    if name not in _SPECS:
        _SPECS[name] = specs.load(name)
    return _SPECS[name]


def mac_field(fields: Mapping[str, str]) -> str:
    """``128`` when any field above 64 is present (secondary bitmap), else ``64``.

    >>> mac_field({"t": "0200", "3": "000000"}), mac_field({"t": "0400", "90": "0" * 42})
    ('64', '128')
    """
    secondary = any(k.isascii() and k.isdigit() and 64 < int(k) < 128 for k in fields)
    return "128" if secondary else "64"


def mac_bytes_encoded(spec_name: str) -> int:
    """Bytes the MAC occupies on the wire: 8 binary (POS) or 16 hex characters (MIS)."""
    return 8 if spec(spec_name)["64"]["data_enc"] == "b" else 16


def _fast(spec_name: str) -> FastCodec:
    if spec_name not in _FAST:
        _FAST[spec_name] = FastCodec(spec(spec_name))
    return _FAST[spec_name]


def encode(fields: Mapping[str, str], spec_name: str) -> bytes:
    """Encode (bitmaps are computed from the fields present); pyiso8583 for anything unusual."""
    fast = _fast(spec_name).encode(dict(fields))
    if fast is not None:
        return fast
    raw, _enc = iso8583.encode(dict(fields), spec(spec_name))
    return bytes(raw)


def decode_fields(raw: bytes, spec_name: str) -> Fields:
    """The decoded fields only (fast for plainly valid messages); raises ``iso8583.DecodeError``."""
    fast = _fast(spec_name).decode(raw)
    return fast if fast is not None else dict(decode(raw, spec_name)[0])


def decode(raw: bytes, spec_name: str) -> tuple[Fields, dict[str, dict[str, bytes]]]:
    """Decode with pyiso8583; raises ``iso8583.DecodeError`` (with field and position)."""
    dec, enc = iso8583.decode(raw, spec(spec_name))
    return dec, enc


def build(
    fields: Mapping[str, str], spec_name: str, mac_alg: str = "", mac_key: bytes = b""
) -> bytes:
    """Encode ``fields``; with a MAC key, add the MAC in field 64/128 (overwriting any value)."""
    if not mac_alg or not mac_key:
        return encode(fields, spec_name)
    doc = {k: v for k, v in fields.items() if k not in MAC_FIELDS}
    doc[mac_field(doc)] = "0" * 16
    raw = encode(doc, spec_name)
    covered = raw[: len(raw) - mac_bytes_encoded(spec_name)]
    tag = _mac.mac(mac_alg, mac_key, covered)
    return covered + (tag if mac_bytes_encoded(spec_name) == 8 else tag.hex().upper().encode())


def macs(mti: str) -> bool:
    """Whether a message of this MTI carries a MAC: all but network management (08xx).

    >>> macs("0200"), macs("0810")
    (True, False)
    """
    return not mti.startswith("08")


def mac_verdict(
    raw: bytes, fields: Mapping[str, str], spec_name: str, mac_alg: str, mac_key: bytes
) -> bool | None:
    """The MAC check of a message already decoded into ``fields``.

    None when it carries no MAC field; False when the MAC is wrong or is not
    readable (a hexadecimal MAC that is not hexadecimal); True when it is right.
    The MAC field is the last field, so the covered bytes are everything before
    it. Hexadecimal MACs are accepted in either case.

    >>> mac_verdict(b"0210..." + b"ZZ" * 8, {"t": "0210", "64": "ZZ" * 8}, "mis", "x919", bytes(16))
    False
    """
    if not any(f in fields for f in MAC_FIELDS):
        return None
    size = mac_bytes_encoded(spec_name)
    if len(raw) < size:
        return False
    tail = raw[-size:]
    try:
        received = tail if size == 8 else bytes.fromhex(tail.decode("ascii"))
    except ValueError:  # not hexadecimal (UnicodeDecodeError is a ValueError too)
        return False
    return _mac.mac(mac_alg, mac_key, raw[:-size]) == received


def check_mac(raw: bytes, spec_name: str, mac_alg: str, mac_key: bytes) -> bool | None:
    """Decode ``raw`` (``iso8583.DecodeError`` if it does not) and give its ``mac_verdict``."""
    fields, _enc = decode(raw, spec_name)
    return mac_verdict(raw, fields, spec_name, mac_alg, mac_key)


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits; anything shorter than 13 is fully masked.

    (The tools' own copy: they may not import ``ledger``.)

    >>> mask_pan("123456789012"), mask_pan("1234567890123")
    ('************', '123456***0123')
    """
    if len(pan) < PAN_MASK_DIGITS_MIN:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def display_value(field: str, value: str) -> str:
    """How a field is shown: PAN masked, secrets and MACs by length only.

    >>> display_value("52", "0123456789ABCDEF"), display_value("2", "6250941234567890")
    ('[redacted, 16 chars]', '625094******7890')
    """
    if field == "2":
        return mask_pan(value)
    if field in REDACTED_FIELDS:
        return f"[redacted, {len(value)} chars]"
    if field in MAC_FIELDS:
        return f"[MAC, {len(value)} hex chars]"
    return value


def _order(key: str) -> tuple[int, str]:
    special = {"h": -3, "t": -2, "p": -1}
    return (special[key], key) if key in special else (int(key) if key.isascii() and key.isdigit() else 999, key)


def format_fields(fields: Mapping[str, str]) -> list[str]:
    """One ``NNN  value`` line per field, in field order, masked.

    >>> format_fields({"t": "0210", "39": "00", "2": "6250941234567890"})
    ['t    0210', '2    625094******7890', '39   00']
    """
    return [f"{k:<4} {display_value(k, fields[k])}" for k in sorted(fields, key=_order)]


def transmission_datetime(now: dt.datetime | None = None) -> str:
    """Field 7, MMDDhhmmss in UTC.

    >>> transmission_datetime(dt.datetime(2024, 3, 9, 14, 5, 7, tzinfo=dt.UTC))
    '0309140507'
    """
    now = dt.datetime.now(dt.UTC) if now is None else now.astimezone(dt.UTC)
    return now.strftime("%m%d%H%M%S")


def pad_tid(tid: str) -> str:
    """Field 41: 8 characters, space-padded (ValueError if longer)."""
    if len(tid) > 8:
        raise ValueError(f"terminal id {tid!r} is longer than 8 characters")
    return tid.ljust(8)


def pad_mid(mid: str) -> str:
    """Field 42: 15 characters, space-padded (ValueError if longer)."""
    if len(mid) > 15:
        raise ValueError(f"merchant id {mid!r} is longer than 15 characters")
    return mid.ljust(15)

