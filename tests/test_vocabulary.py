"""specs.vocabulary: the ISO 8583 words, each defined once and used by the switch and the tools alike."""

from __future__ import annotations

import re
from pathlib import Path

import specs
from ledger.loyalty.outcomes import Reason
from specs import vocabulary as V
from switch import dedup
from switch.handlers import responses
from tools import _msg

ROOT = Path(__file__).resolve().parent.parent
# The constants of the module's response-code section, as written.
_SECTION = Path(V.__file__).read_text().split("- response codes (field 39)\n", 1)[1].split("MEANINGS", 1)[0]
CODE_NAMES = dict(re.findall(r'^([A-Z_]+) = "(\d\d)"', _SECTION, re.M))


def test_each_response_code_has_one_name_and_a_meaning() -> None:
    assert len(set(CODE_NAMES.values())) == len(CODE_NAMES), "a code with two names"
    assert set(CODE_NAMES.values()) == set(V.MEANINGS)


def test_meanings_are_the_host_interfaces() -> None:
    doc = (Path(specs.__file__).resolve().parent / "HOST-INTERFACE.md").read_text()
    section = doc.split("## 8. Response codes (field 39)", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (\d\d) \| (.+?) \|$", section, re.M))
    assert table == V.MEANINGS


def test_every_reason_answers_a_known_code() -> None:
    assert set(responses.RESPONSE_CODES) == set(Reason)
    assert set(responses.RESPONSE_CODES.values()) <= set(V.MEANINGS)
    assert responses.reasons_answered("55") == (Reason.PIN_INCORRECT,)
    assert responses.reasons_answered("75") == (Reason.PIN_TRIES_EXCEEDED,)


def test_no_module_spells_a_response_code_or_the_fields_type_of_its_own() -> None:
    # A constant whose value is a response code belongs in specs/vocabulary.py; so does the alias.
    codes = "|".join(V.MEANINGS)
    own = re.compile(rf'^[A-Z][A-Z_]* = "({codes})"\s*(#.*)?$|^Fields = ', re.M)
    found = [f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
             for package in ("switch", "ledger", "tools", "specs")
             for path in sorted((ROOT / package).rglob("*.py")) if path.name != "vocabulary.py"
             for m in own.finditer(path.read_text())]
    # Field values that happen to be two digits (an amount type, an account type) are not codes.
    found = [f for f in found if not re.search(r"(AMOUNT_TYPE|ACCOUNT|INQUIRY_TYPE)\w* =", f)]
    assert found == []


def test_the_duplicate_key_is_spelled_once() -> None:
    request = {"t": "0200", "3": "000000", "7": "0101120000", "11": "000042", "41": "T1      ", "64": "00" * 8}
    parts = V.duplicate_key(request)
    assert parts == ("T1", "000042", "0101120000")
    key = dedup.key_for(request)
    assert key is not None
    # The switch's stored response is found from the loyalty transaction's key, and back.
    assert key.idempotency_key == V.receipt_key(*parts) == V.receipt_key_of(V.request_key(*parts))
    assert V.duplicate_key({"t": "0200", "7": "0101120000", "41": "T1"}) is None


def test_the_tools_answer_mtis_as_the_switch_does() -> None:
    assert _msg.response_mti is V.response_mti
    assert [V.response_mti(m) for m in ("0200", "0400", "0420", "0421", "0500", "0800")] == [
        "0210", "0410", "0430", "0430", "0510", "0810"]
