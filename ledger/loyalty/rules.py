"""The arithmetic of the programme: earning, fees, proportional undo, cards. Pure functions.

Every rounding is a floor, per transaction, in the member's disfavour for
earning and in the merchant's favour for fees (see specs/ACCOUNTING.md).
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction


def earned_points(amount_minor: int, earn_num: int, earn_den: int, scale: int) -> int:
    """Points for a purchase: floor(amount in whole units x earn_num / earn_den).

    >>> earned_points(12_345, 1, 1, 2)   # 123.45 CNY at 1 point per CNY
    123
    >>> earned_points(999, 3, 2, 2)      # 9.99 CNY at 1.5 points per CNY
    14
    """
    return (amount_minor * earn_num) // (earn_den * 10**scale)


def fee_minor(value_minor: int, bps: int) -> int:
    """A fee of ``bps`` basis points on ``value_minor``, floored.

    >>> fee_minor(10_000, 50), fee_minor(199, 50)
    (50, 0)
    """
    return (value_minor * bps) // 10_000


def fee_bps_for(schedule: dict[str, int], txn_type: str) -> int:
    """The merchant's fee for a transaction type: its own entry, else ``default``, else 0.

    >>> fee_bps_for({"default": 50, "redeem": 30}, "redeem"), fee_bps_for({"default": 50}, "load")
    (30, 50)
    """
    return int(schedule.get(txn_type, schedule.get("default", 0)))


def undo_targets(legs: list[int], original_units: int, undone_units_after: int) -> list[int]:
    """How much of each original leg stands undone once ``undone_units_after`` of the
    original's ``original_units`` are undone: floor(leg x after / original), exact at the end.

    Computing cumulative targets (not per-refund shares) makes a series of partial
    refunds add up to exactly the original, whatever the rounding on the way.

    >>> undo_targets([10, 3], 100, 50)
    [5, 1]
    >>> undo_targets([10, 3], 100, 100)
    [10, 3]
    """
    if undone_units_after >= original_units:
        return list(legs)
    return [(leg * undone_units_after) // original_units for leg in legs]


def parse_earn_rate(text: str) -> tuple[int, int]:
    """An earn rate as (numerator, denominator), from ``"1"``, ``"0.5"``, ``"3/2"``.

    >>> parse_earn_rate("1.25"), parse_earn_rate("3/2"), parse_earn_rate("0")
    ((5, 4), (3, 2), (0, 1))
    """
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"earn rate must be a number or a fraction like 3/2, got {text!r}") from None
    if rate < 0 or rate > 10_000:
        raise ValueError(f"earn rate must be between 0 and 10000, got {text!r}")
    return rate.numerator, rate.denominator


# A digit's contribution when doubled (every second digit from the right).
_LUHN_DOUBLED = {str(d): d * 2 - 9 if d > 4 else d * 2 for d in range(10)}


def luhn_ok(pan: str) -> bool:
    """True when ``pan`` is all ASCII digits and passes the Luhn check.

    (str.isdigit alone admits other scripts' digits, which int() may refuse.)

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112"), luhn_ok("４１１１１１１１１１１１１１１１")
    (True, False, False)
    """
    if not (pan.isascii() and pan.isdigit()):
        return False
    reverse = pan[::-1]
    total = sum(map(int, reverse[0::2])) + sum(_LUHN_DOUBLED[ch] for ch in reverse[1::2])
    return total % 10 == 0


def luhn_complete(body: str) -> str:
    """``body`` with its Luhn check digit appended.

    >>> luhn_complete("411111111111111")
    '4111111111111111'
    """
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable: one check digit always fits")


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest hidden (docs/design.md, Rules that never bend).

    >>> mask_pan("6212340000000001")
    '621234******0001'
    """
    # Shorter than 13 digits, first 6 + last 4 would show most of it: hide it all.
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def is_expired(expiry_yymm: str | None, today: dt.date) -> bool:
    """A card is good through the last day of its expiry month.

    >>> is_expired("2612", dt.date(2026, 12, 31)), is_expired("2612", dt.date(2027, 1, 1))
    (False, True)
    >>> is_expired(None, dt.date(2099, 1, 1))
    False
    """
    if expiry_yymm is None:
        return False
    yy, mm = int(expiry_yymm[:2]), int(expiry_yymm[2:])
    return (today.year - 2000, today.month) > (yy, mm)
