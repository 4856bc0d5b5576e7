"""Request validation beyond what the codec checks: formats, Luhn, dates, and
which fields each (MTI, transaction type) must or must not carry.

The field rules are data, in one table (:data:`RULES`); a failure is a
:class:`Invalid` naming the field, answered 30 (format error) by the server.

>>> ok = {"t": "0800", "7": "0101120000", "11": "000001", "41": "T1      ", "70": "301"}
>>> validate(ok) is None
True
>>> validate({**ok, "7": "1301120000"})
Invalid(field='7', reason='not a valid MMDDhhmmss date-time')
>>> validate({"t": "0200", "2": "4111111111111112", "3": "000000", "4": "000000000100", "7": "0101120000",
...           "11": "000001", "41": "T1      ", "42": "M1             ", "49": "156"})
Invalid(field='2', reason='PAN fails the Luhn check')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ledger.loyalty.rules import luhn_ok
from specs.vocabulary import Fields
from switch import emv
from switch.codec import canonical_mti


@dataclass(frozen=True)
class Invalid:
    """Why a request is malformed: the field and a short reason (safe to log: no values)."""

    field: str
    reason: str


@dataclass(frozen=True)
class Rule:
    """Fields one kind of request must carry and must not carry.

    ``currency_unless_points``: 49 is mandatory unless the amount is in points
    (an account type of field 3 is 65) or the message is a balance inquiry.
    """

    mandatory: frozenset[str]
    forbidden: frozenset[str] = frozenset()
    currency_unless_points: bool = False


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


# Fields that only the switch sets: a request carrying them is malformed.
_RESPONSE_ONLY = _f("38", "39")
_FINANCIAL = Rule(_f("2", "3", "4", "7", "11", "41", "42"), _RESPONSE_ONLY, currency_unless_points=True)

# (MTI, transaction type = first 2 digits of field 3, or "*" for any) -> rule.
# An MTI missing here is not validated beyond formats; routing answers it 12.
RULES: dict[tuple[str, str], Rule] = {
    ("0800", "*"): Rule(_f("7", "11", "41", "70"), _RESPONSE_ONLY | _f("2", "35", "45", "52", "55", "110")),
    ("0100", "*"): _FINANCIAL,
    ("0200", "*"): _FINANCIAL,
    ("0220", "*"): _FINANCIAL,
    ("0400", "*"): _FINANCIAL,
    ("0420", "*"): _FINANCIAL,
    ("0500", "*"): Rule(_f("3", "7", "11", "41", "42", "60", "74", "76", "86", "88"),
                        _RESPONSE_ONLY | _f("2", "35", "45", "52", "55", "110")),
}

POINTS_ACCOUNT = "65"
INQUIRY_TYPE = "31"


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29: the year is not sent


def _mmdd_ok(v: str) -> bool:
    month, day = int(v[0:2]), int(v[2:4])
    return 1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]


def _hhmmss_ok(v: str) -> bool:
    return int(v[0:2]) <= 23 and int(v[2:4]) <= 59 and int(v[4:6]) <= 59


_DIGITS = re.compile(r"[0-9]+")
_TEXT = re.compile(r"[\x20-\x7e]+")  # printable ASCII
_ID = re.compile(r"[A-Za-z0-9_-]+ *")  # an id, space-padded on the right


def _digits(n_min: int, n_max: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if not (n_min <= len(v) <= n_max) or not _DIGITS.fullmatch(v):
            return f"must be {n_min}..{n_max} digits" if n_min != n_max else f"must be {n_min} digits"
        return None
    return check


def _pan(v: str) -> str | None:
    if not (12 <= len(v) <= 19) or not _DIGITS.fullmatch(v):
        return "PAN must be 12..19 digits"
    return None if luhn_ok(v) else "PAN fails the Luhn check"


def _datetime10(v: str) -> str | None:
    if _digits(10, 10)(v) or not (_mmdd_ok(v[:4]) and _hhmmss_ok(v[4:])):
        return "not a valid MMDDhhmmss date-time"
    return None


def _time6(v: str) -> str | None:
    return "not a valid hhmmss time" if _digits(6, 6)(v) or not _hhmmss_ok(v) else None


def _date4(v: str) -> str | None:
    return "not a valid MMDD date" if _digits(4, 4)(v) or not _mmdd_ok(v) else None


def _ident(v: str) -> str | None:
    return None if _ID.fullmatch(v) else "must be letters, digits, _ or -, space-padded"


def _text(v: str) -> str | None:
    return None if _TEXT.fullmatch(v) else "must be printable ASCII"


def _hex(v: str) -> str | None:
    try:
        bytes.fromhex(v)
    except ValueError:
        return "must be hexadecimal"
    return None


def _pin_block_aes(v: str) -> str | None:
    # Field 110: an ISO 9564 format 4 PIN block (16 bytes) as 32 hexadecimal characters.
    return "must be 32 hexadecimal characters" if len(v) != 32 or _hex(v) else None


def _chip_data(v: str) -> str | None:
    found = emv.problem(v)
    return None if found is None else f"chip data: {found}"


# Per-field format checks (lengths are already enforced by the codec's spec).
FORMATS: dict[str, Callable[[str], str | None]] = {
    "2": _pan,
    "3": _digits(6, 6),
    "4": _digits(12, 12),
    "7": _datetime10,
    "11": _digits(6, 6),
    "12": _time6,
    "13": _date4,
    "22": _digits(3, 3),
    "25": _digits(2, 2),
    "37": _text,
    "41": _ident,
    "42": _ident,
    "48": _text,
    "49": _digits(3, 3),
    "52": _hex,
    "55": _chip_data,
    "60": _digits(6, 6),
    "64": _hex,
    "70": _digits(3, 3),
    "74": _digits(10, 10),
    "76": _digits(10, 10),
    "86": _digits(16, 16),
    "88": _digits(16, 16),
    "90": _digits(42, 42),
    "110": _pin_block_aes,
    "128": _hex,
}


def rule_for(mti: str, processing_code: str | None) -> Rule | None:
    """The field rule for a request, most specific first: (MTI, type), then (MTI, ``*``)."""
    mti = canonical_mti(mti)  # a repeat (0421) follows its original's rule
    txn_type = (processing_code or "")[:2]
    return RULES.get((mti, txn_type)) or RULES.get((mti, "*"))


def amount_in_points(processing_code: str) -> bool:
    """True when field 4 counts points: either account type of field 3 is ``65``.

    >>> amount_in_points("006500"), amount_in_points("000000")
    (True, False)
    """
    return POINTS_ACCOUNT in (processing_code[2:4], processing_code[4:6])


def validate(fields: Fields) -> Invalid | None:
    """The first problem with a decoded request, or None when it is well formed."""
    mti = fields.get("t", "")
    for name, value in fields.items():
        check = FORMATS.get(name)
        if check is not None and (problem := check(value)):
            return Invalid(name, problem)
    for name in ("41", "42"):
        if name in fields and not fields[name].strip():
            return Invalid(name, "must not be blank")
    rule = rule_for(mti, fields.get("3"))
    if rule is None:
        return None
    missing = [n for n in rule.mandatory if n not in fields]
    if missing:
        return Invalid(min(missing, key=int), "mandatory field missing")
    extra = [n for n in rule.forbidden if n in fields]
    if extra:
        return Invalid(min(extra, key=int), "field not allowed in this message")
    if rule.currency_unless_points and "49" not in fields:
        pc = fields.get("3", "")
        if not amount_in_points(pc) and pc[:2] != INQUIRY_TYPE:
            return Invalid("49", "currency is mandatory for a money amount")
    return None
