"""Migration 0016 (members) on a database that already has cards: every card becomes a member of
its own (member id = card id), a phone logs in at most one member, and new members get new ids."""

from __future__ import annotations

import shutil
from pathlib import Path

from ledger import db as ledger_db
from ledger import migrate
from ledger.loyalty import cards

MEMBERS = 16


async def test_existing_cards_become_members(empty_db_dsn: str, tmp_path: Path) -> None:
    older = tmp_path / "migrations"
    older.mkdir()
    for m in migrate.discover():
        if m.version < MEMBERS:
            shutil.copy(m.path, older / m.path.name)
    conn = await ledger_db.connect(empty_db_dsn)
    try:
        await migrate.upgrade(conn, older)
        rows = [("6212340000000019", "Ann", "138 0000-0001"), ("6212340000000027", None, "13800000001"),
                ("6212340000000035", "Bo", "12"), ("6212340000000043", None, None)]
        await conn.executemany("INSERT INTO loyalty.cards(pan, name, phone) VALUES ($1, $2, $3)", rows)
        await migrate.upgrade(conn)
        members = await conn.fetch(
            "SELECT c.id AS card_id, c.member_id, m.name, m.phone FROM loyalty.cards c "
            "JOIN loyalty.members m ON m.id = c.member_id ORDER BY c.id")
        assert [r["member_id"] for r in members] == [r["card_id"] for r in members]
        assert [(r["name"], r["phone"]) for r in members] == [
            ("Ann", "13800000001"), ("", None), ("Bo", None), ("", None)]
        # A new member's id does not collide with the card-numbered ones.
        issued = await cards.issue_card(conn, "6212340000000050", phone="+86 139 0000 0002")
        assert issued["member_id"] > max(r["member_id"] for r in members)
        assert await conn.fetchval("SELECT phone FROM loyalty.members WHERE id = $1",
                                   issued["member_id"]) == "+8613900000002"
        await migrate.check_current(conn)
    finally:
        await conn.close()
