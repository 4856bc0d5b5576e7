"""Validation rules: formats, Luhn, dates, and the mandatory/forbidden table."""

from __future__ import annotations

import pytest

from switch.validation import RULES, Invalid, amount_in_points, luhn_ok, rule_for, validate

PAN = "6212345678901232"


def fin(**over: str) -> dict[str, str]:
    base = {"t": "0200", "2": PAN, "3": "000000", "4": "000000000100", "7": "0101120000", "11": "000001",
            "41": "T1      ", "42": "M1             ", "49": "156"}
    base.update(over)
    return base


def test_good_messages_pass() -> None:
    assert validate(fin()) is None
    assert validate(fin(t="0400", **{"90": "0" * 42})) is None
    assert validate(fin(t="0421")) is None
    assert validate({"t": "0800", "7": "0229235959", "11": "000001", "41": "T1      ", "70": "001"}) is None
    assert validate({"t": "0500", "3": "920000", "7": "0101120000", "11": "000001", "41": "T1      ",
                     "42": "M1             ", "60": "000001", "74": "0" * 10, "76": "0" * 10,
                     "86": "0" * 16, "88": "0" * 16}) is None


def test_luhn() -> None:
    assert luhn_ok(PAN) and luhn_ok("4111111111111111") and luhn_ok("0")
    assert not luhn_ok(PAN[:-1] + "3")


@pytest.mark.parametrize("field,value", [
    ("2", PAN[:-1] + "3"), ("2", "12345"), ("2", "62123456789012AB"),
    ("3", "00A000"), ("4", "1" * 11 + "X"), ("11", "00000A"),
    ("7", "0001120000"), ("7", "1301120000"), ("7", "0230120000"), ("7", "0101240000"), ("7", "0101126000"),
    ("7", "01011200-0"), ("12", "240000"), ("12", "12AB00"), ("13", "1232"), ("13", "0000"),
    ("22", "0A1"), ("25", "X0"), ("49", "15A"), ("41", "T!      "), ("42", " " * 15), ("41", " " * 8),
    ("37", "abc\x01"), ("52", "ZZZZZZZZZZZZZZZZ"), ("64", "GG" * 8), ("90", "0" * 41 + "A"),
])
def test_format_failures_name_the_field(field: str, value: str) -> None:
    problem = validate(fin(**{field: value}))
    assert isinstance(problem, Invalid) and problem.field == field


@pytest.mark.parametrize("mti", ["0200", "0400", "0420", "0421"])
@pytest.mark.parametrize("field", ["2", "3", "4", "7", "11", "41", "42"])
def test_financial_mandatory(mti: str, field: str) -> None:
    msg = {k: v for k, v in fin(t=mti).items() if k != field}
    assert validate(msg) == Invalid(field, "mandatory field missing")


def test_currency_rules() -> None:
    no49 = {k: v for k, v in fin().items() if k != "49"}
    assert validate(no49) == Invalid("49", "currency is mandatory for a money amount")
    assert validate({**no49, "3": "006500"}) is None  # points: 49 optional
    assert validate({**no49, "3": "210065"}) is None
    assert validate({**no49, "3": "316500"}) is None  # inquiry
    assert validate({**no49, "3": "210060"}) is not None  # stored value is money
    assert amount_in_points("906500") and not amount_in_points("006000")


@pytest.mark.parametrize("mti,field", [("0200", "39"), ("0200", "38"), ("0800", "2"), ("0800", "52"),
                                        ("0500", "2"), ("0800", "39")])
def test_forbidden(mti: str, field: str) -> None:
    if mti == "0800":
        msg = {"t": "0800", "7": "0101120000", "11": "000001", "41": "T1      ", "70": "301"}
    elif mti == "0500":
        msg = {"t": "0500", "3": "920000", "7": "0101120000", "11": "000001", "41": "T1      ",
               "42": "M1             ", "60": "000001", "74": "0" * 10, "76": "0" * 10, "86": "0" * 16,
               "88": "0" * 16}
    else:
        msg = fin()
    msg[field] = {"2": PAN, "52": "00" * 8, "39": "00", "38": "123456"}[field]
    assert validate(msg) == Invalid(field, "field not allowed in this message")


def test_rules_table_is_data() -> None:
    assert rule_for("0800", None) is RULES[("0800", "*")]
    assert rule_for("0100", "006000") is RULES[("0100", "*")]  # a pre-authorisation: financial
    assert rule_for("0120", "000000") is None
    assert validate({"t": "0120"}) is None  # unknown MTIs are routed (12), not format errors
    for (mti, txn), rule in RULES.items():
        assert len(mti) == 4 and (txn == "*" or len(txn) == 2)
        assert not rule.mandatory & rule.forbidden
