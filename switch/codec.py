"""ISO 8583 encode/decode with a listener's spec, and the MAC's place in a message.

A thin layer over pyiso8583 that adds what a switch needs: the MTI is read
(and checked to be 4 ASCII digits) before anything else, so that an
undecodable message can still be answered; errors carry the field and the
byte position; and the bytes a MAC covers are found the same way for
requests (as received) and responses (as sent).

Messages are plain dicts as pyiso8583 uses them: ``"t"`` is the MTI, field
numbers are strings, values are strings (binary fields as upper-case hex).

>>> spec = load_spec("pos")
>>> raw = encode({"t": "0800", "7": "0101120000", "11": "000001", "41": "T1      ", "70": "301"}, spec)
>>> decode(raw, spec)["70"], read_mti(raw)
('301', '0800')
>>> mac_field({"t": "0200", "2": "4"}), mac_field({"t": "0800", "70": "301"})
('64', '128')
"""

from __future__ import annotations

from typing import Any

import iso8583

import specs
from ledger.errors import SwitchdError
from specs.fastcodec import FastCodec
from specs.vocabulary import MAC_FIELDS, Fields

Spec = dict[str, dict[str, Any]]

# Fields that are never part of a message's content (structure, not data).
STRUCTURAL = frozenset({"h", "p", "1"})


class CodecError(SwitchdError):
    """A message that cannot be decoded or encoded. ``field``/``position`` say where.

    ``partial`` holds the fields decoded cleanly before the failure, so a
    format-error response can echo what the request did carry.
    """

    def __init__(self, message: str, field: str | None = None, position: int | None = None,
                 partial: Fields | None = None) -> None:
        where = "".join([f" field {field}" if field else "", f" at byte {position}" if position is not None else ""])
        super().__init__(f"{message}{':' if where else ''}{where}")
        self.reason = message
        self.field = field
        self.position = position
        self.partial: Fields = partial or {}


def load_spec(name: str) -> Spec:
    """The listener's spec by name (``pos`` or ``mis``), a private copy."""
    return specs.load(name)


# Compiled forms of the specs in use, by identity (the spec is kept so its id stays its own).
_COMPILED: dict[int, tuple[Spec, FastCodec]] = {}
_COMPILED_MAX = 64


def _fast(spec: Spec) -> FastCodec:
    found = _COMPILED.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    fast = FastCodec(spec)
    _COMPILED[id(spec)] = (spec, fast)
    return fast


def read_mti(raw: bytes) -> str | None:
    """The MTI when the first 4 bytes are ASCII digits, else None (the message is unreadable).

    >>> read_mti(b"0200..."), read_mti(b"02\\xff0"), read_mti(b"02")
    ('0200', None, None)
    """
    head = raw[:4]
    if len(head) == 4 and all(0x30 <= b <= 0x39 for b in head):
        return head.decode("ascii")
    return None


def decode(raw: bytes, spec: Spec) -> Fields:
    """Decode one message; raise CodecError (with field, position, partial fields) if it cannot be.

    >>> decode(b"08x0", load_spec("pos"))
    Traceback (most recent call last):
    ...
    switch.codec.CodecError: MTI is not 4 ASCII digits: field t at byte 0
    """
    if read_mti(raw) is None:
        raise CodecError("MTI is not 4 ASCII digits", "t", 0)
    # The compiled spec answers plainly valid messages; pyiso8583 everything else, errors included.
    doc = _fast(spec).decode(bytes(raw))
    if doc is not None:
        return doc
    try:
        doc, _enc = iso8583.decode(bytes(raw), spec)
    except iso8583.DecodeError as exc:
        # The failing field is in doc_dec with a half-decoded value: leave it out.
        partial = {k: v for k, v in exc.doc_dec.items() if k != exc.field and isinstance(v, str)}
        raise CodecError(exc.msg, exc.field, exc.pos, partial) from None
    except KeyError as exc:
        # A bitmap names a field the spec does not define: bit 65 announces a tertiary bitmap
        # (fields 129-192, which no spec here has), or a spec leaves a field out. pyiso8583
        # looks the field up unguarded; to the terminal it is a format error like any other.
        field = str(exc.args[0]) if exc.args else None
        raise CodecError("field not in the spec", field, None, _partial_known(raw, spec)) from None
    except (ValueError, TypeError, UnicodeError) as exc:  # defensive: pyiso8583 wraps most, not all
        raise CodecError(f"undecodable: {type(exc).__name__}") from None
    return dict(doc)


# Fields a bitmap can name: 2-128, and 129-192 behind a tertiary bitmap.
_BITMAP_FIELDS = tuple(str(n) for n in range(2, 193))
# A field the spec lacks, read as nothing: what comes before it can then be decoded.
_NOTHING = {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "undefined"}


def _partial_known(raw: bytes, spec: Spec) -> Fields:
    """The fields of ``raw`` the spec defines, decoded as far as they go (for the echo in a 30).

    Fields are laid out in ascending order, so the ones before the first undefined field decode
    as usual; an undefined one is read as empty, and whatever follows it is not trusted.
    """
    lenient = {**spec, **{k: _NOTHING for k in _BITMAP_FIELDS if k not in spec}}
    try:
        doc, _enc = iso8583.decode(bytes(raw), lenient)
    except iso8583.DecodeError as exc:  # the failing field is half-decoded: leave it out
        doc = {k: v for k, v in exc.doc_dec.items() if k != exc.field}
    except (KeyError, ValueError, TypeError, UnicodeError):  # defensive: nothing to echo then
        return {}
    first_undefined = min((int(k) for k in doc if k.isdigit() and k not in spec), default=193)
    return {k: v for k, v in doc.items() if isinstance(v, str) and k in spec
            and not (k.isdigit() and int(k) >= first_undefined)}


def encode(fields: Fields, spec: Spec) -> bytes:
    """Encode a message (bitmaps computed from the fields present).

    >>> encode({"t": "0810", "41": "T1"}, load_spec("pos"))
    Traceback (most recent call last):
    ...
    switch.codec.CodecError: Field data is 2 bytes, expecting 8: field 41
    """
    doc = {k: v for k, v in fields.items() if k not in STRUCTURAL}
    fast = _fast(spec).encode(doc)
    if fast is not None:
        return fast
    try:
        raw, _enc = iso8583.encode(doc, spec)
    except iso8583.EncodeError as exc:
        raise CodecError(exc.msg, exc.field) from None
    except KeyError as exc:  # a field the spec does not define (pyiso8583 looks it up unguarded)
        raise CodecError("field not in the spec", str(exc.args[0]) if exc.args else None) from None
    return bytes(raw)


# Fields 65-128 but the MAC: any of them present means a secondary bitmap, so the MAC goes in 128.
_SECONDARY_DATA_KEYS = frozenset(str(n) for n in range(65, 129)) - set(MAC_FIELDS)


def mac_field(fields: Fields) -> str:
    """Where the MAC goes: field 128 when a secondary bitmap is present, else 64 (specs/HOST-INTERFACE.md §9.2)."""
    return "128" if not _SECONDARY_DATA_KEYS.isdisjoint(fields) else "64"


def mac_bytes_len(spec: Spec, field: str) -> int:
    """How many bytes the MAC field takes on the wire: 8 binary, or 16 hex characters."""
    return int(spec[field]["max_len"])


def mac_from_value(value: str) -> bytes | None:
    """The 8 MAC bytes from a decoded field value (hex, either case), or None if malformed.

    >>> mac_from_value("0a1b2c3d4e5f6071").hex(), mac_from_value("zz")
    ('0a1b2c3d4e5f6071', None)
    """
    try:
        mac = bytes.fromhex(value)
    except ValueError:
        return None
    return mac if len(mac) == 8 else None


def mac_input(raw: bytes, spec: Spec, field: str) -> bytes:
    """The bytes a MAC in ``field`` covers: from the MTI up to, not including, the MAC.

    The MAC field is always the last one present (64 without a secondary
    bitmap, 128 with one), so it is the message's tail.
    """
    n = mac_bytes_len(spec, field)
    assert len(raw) > n, "a message carrying a MAC is longer than the MAC"
    return raw[:-n]


def encode_with_mac(fields: Fields, spec: Spec, sign: Any) -> bytes:
    """Encode ``fields`` with a MAC: ``sign(data) -> 8 bytes`` over the bytes as sent.

    The MAC field is encoded first as a placeholder so the bitmap has its bit
    set, then the placeholder's bytes are replaced by the real MAC.
    """
    body = {k: v for k, v in fields.items() if k not in MAC_FIELDS}
    where = mac_field(body)
    body[where] = "0" * 16
    raw = encode(body, spec)
    n = mac_bytes_len(spec, where)
    mac: bytes = sign(raw[:-n])
    tail = mac if n == 8 else mac.hex().upper().encode("ascii")
    return raw[:-n] + tail


# specs/HOST-INTERFACE.md §11: a repeated advice (0421, 0221) is answered like its advice (0420, 0220).
REPEATS = {"0421": "0420", "0221": "0220"}


def canonical_mti(mti: str) -> str:
    """The MTI a request is handled as: a repeat is its original (the one place this is decided).

    >>> canonical_mti("0421"), canonical_mti("0200")
    ('0420', '0200')
    """
    return REPEATS.get(mti, mti)
