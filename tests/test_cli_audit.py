"""Every change made through the CLI leaves an audit entry (``cli:<user>``, before and after)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import root
from ledger import db as ledger_db
from ledger.audit_log import cli_actor
from ledger.loyalty.rules import luhn_ok


@pytest.fixture
def run(db_dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHD_DSN", db_dsn)
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), obj={}, catch_exceptions=False)

    return invoke


def _entries(dsn: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await ledger_db.connect(dsn)
        try:
            rows = await conn.fetch("SELECT actor, user_id, action, object_kind, object_id, merchant_id, before, after "
                                    "FROM portal.audit ORDER BY id")
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_cli_actor_names_the_operating_system_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "bob")
    assert cli_actor() == "cli:bob"


def test_cli_changes_leave_audit_entries_with_before_and_after(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    assert run("demo", "seed").exit_code == 0
    assert run("merchant", "disable", "M0001").exit_code == 0
    assert run("terminal", "disable", "T0000001").exit_code == 0
    assert run("bin", "add", "777777", "--description", "test").exit_code == 0
    entries = _entries(db_dsn)
    assert {e["actor"] for e in entries} == {"cli:alice"}
    assert all(e["user_id"] is None for e in entries)
    by_action = {e["action"]: e for e in entries}
    assert by_action["demo_seed"]["after"]["portal_users"]
    disabled = by_action["merchant_disabled"]
    assert (disabled["object_kind"], disabled["object_id"], disabled["merchant_id"]) == ("merchant", "M0001", "M0001")
    assert disabled["before"]["status"] == "active" and disabled["after"]["status"] == "disabled"
    terminal = by_action["terminal_disable"]
    assert terminal["before"]["status"] == "active" and terminal["after"]["status"] == "disabled"
    assert "mac_key_sealed" not in terminal["after"]
    assert by_action["bin_add"]["after"] == {"prefixes": ["777777"], "description": "test"}


def test_a_refused_change_leaves_no_entry(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    assert run("merchant", "disable", "NOSUCH").exit_code == 4
    assert run("bin", "add", "12").exit_code != 0
    assert _entries(db_dsn) == []


def test_card_entries_name_the_card_masked(run, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    assert run("bin", "add", "900123").exit_code == 0
    pan = next(f"900123000000001{d}" for d in "0123456789" if luhn_ok(f"900123000000001{d}"))
    assert run("card", "issue", pan, "--phone", "123 456").exit_code == 0
    assert run("card", "block", pan).exit_code == 0
    cards = [e for e in _entries(db_dsn) if e["object_kind"] == "card"]
    assert [e["action"] for e in cards] == ["card_issue", "card_block"]
    assert all(e["object_id"] == f"{pan[:6]}******{pan[-4:]}" for e in cards)
    assert pan not in repr(cards) and "123 456" not in repr(cards)
    assert cards[1]["before"]["status"] == "active" and cards[1]["after"]["status"] == "blocked"



def test_user_add_makes_a_portal_user_who_must_change_the_password(run, db_dsn: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pw"
    secret.write_text("first password 1\n")
    assert run("user", "add", "root-admin", "--name", "Root", "--role", "platform_admin",
               "--password-file", str(secret)).exit_code == 0
    listed = json.loads(run("user", "list", "--json").output)
    assert [(u["login"], u["role"], u["must_change_password"]) for u in listed] == [
        ("root-admin", "platform_admin", True)]
    (entry,) = _entries(db_dsn)
    assert (entry["action"], entry["actor"], entry["after"]["login"]) == ("user_add", "cli:alice", "root-admin")
    assert "first password" not in repr(entry) and "argon2" not in repr(entry)
    secret.write_text("short\n")
    refused = run("user", "add", "other", "--name", "O", "--role", "platform_operator", "--password-file", str(secret))
    assert refused.exit_code == 1 and "Password must be 10 to 128 characters" in refused.output
    refused = run("user", "add", "m-user", "--name", "M", "--role", "merchant_admin", "--password-file", str(secret))
    assert refused.exit_code == 1 and "needs its merchant" in refused.output
