"""``switchd member show|password|activation``: by card number or phone, audited, the code printed once."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import root
from ledger import db as ledger_db
from ledger.loyalty import demo
from ledger.loyalty.rules import mask_pan
from portal import member_auth
from portal.settings import PortalSettings

SECRET = "cli-test-portal-secret-0123456789abcdef"
PAN1 = demo.demo_pan(1)


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    monkeypatch.setenv("SWITCHD_PORTAL_SECRET", SECRET)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(root, list(args), obj={}, input=stdin, catch_exceptions=False)

    assert invoke("demo", "seed").exit_code == 0
    return invoke


def _query(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await ledger_db.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _activate(dsn: str, login: str, code: str, password: str) -> int | None:
    async def go() -> int | None:
        pool = await ledger_db.create_pool(dsn, 1, 2)
        try:
            return await member_auth.activate(pool, login, code, password, "10.0.0.1",
                                              PortalSettings(secret=SECRET.encode()))
        finally:
            await pool.close()

    return asyncio.run(go())


def test_show_by_card_number_or_phone(run) -> None:  # type: ignore[no-untyped-def]
    by_phone = run("member", "show", "138 0000 0001", "--json")
    assert by_phone.exit_code == 0, by_phone.output
    data = json.loads(by_phone.output)
    assert data["name"] == "Demo Member 1" and data["phone"] == "13800000001" and data["has_password"]
    assert [c["pan"] for c in data["cards"]] == [f"{PAN1[:6]}******{PAN1[-4:]}"]
    human = run("member", "show", PAN1)
    assert human.exit_code == 0 and "Demo Member 1" in human.output and PAN1 not in human.output
    assert run("member", "show", "13999999999").exit_code == 4


def test_password_from_a_prompt_must_be_changed_and_is_audited(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    done = run("member", "password", PAN1, stdin="temporary-pass-9\ntemporary-pass-9\n")
    assert done.exit_code == 0, done.output
    assert "temporary-pass-9" not in done.output
    login = _query(db_dsn, "SELECT must_change_password FROM portal.member_logins l JOIN loyalty.cards c "
                           "ON c.member_id = l.member_id WHERE c.pan_masked = $1", mask_pan(PAN1))
    assert login == [{"must_change_password": True}]
    weak = run("member", "password", PAN1, stdin="short\nshort\n")
    assert weak.exit_code == 1
    entries = _query(db_dsn, "SELECT actor, object_kind, after::text AS after FROM portal.audit "
                             "WHERE action = 'member_password_reset'")
    assert len(entries) == 1 and entries[0]["actor"] == "cli:alice" and entries[0]["object_kind"] == "member"
    assert "temporary" not in entries[0]["after"]
    # Never an argument.
    assert run("member", "password", PAN1, "temporary-pass-9").exit_code == 2


def test_activation_code_printed_once_and_usable_once(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    made = run("member", "activation", "13800000002")
    assert made.exit_code == 0, made.output
    code = re.search(r"activation code ([A-Z0-9-]{14})", made.output)
    assert code
    stored = _query(db_dsn, "SELECT string_agg(coalesce(after::text, ''), ' ') AS t FROM portal.audit")[0]["t"]
    assert code.group(1) not in stored
    assert _activate(db_dsn, "13800000002", code.group(1), "chosen-pass-123") is not None
    assert _activate(db_dsn, "13800000002", code.group(1), "chosen-pass-456") is None
    assert [e["actor"] for e in _query(db_dsn, "SELECT actor FROM portal.audit WHERE action = 'member_activation'")] \
        == ["cli:alice"]
    assert run("member", "activation", "no-such-member").exit_code == 4
