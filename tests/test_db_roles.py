"""Least-privilege database roles (`switchd db roles`): what each role may do, and may not.

Roles are cluster-wide: every test makes its own with a random prefix and drops them at the end,
so parallel runs do not collide. The local server trusts every role, so no passwords are set.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    Terminal,
    check_mac,
    db_run,
    decode,
    next_stan,
    purchase,
    utc_stamp,
)

from ledger import roles
from ledger.audit import check_books
from tools.harness import HarnessError

TID, MID = "TROL0001", "MROL1"
CARD = "6212345000000000"
MAC = ("cmac-aes", CMAC_KEY_HEX)


def as_user(dsn: str, user: str) -> str:
    """``dsn`` with its user replaced (no password: the test server trusts every role).

    >>> as_user("postgresql://postgres@127.0.0.1:5432/db", "swt_daemon")
    'postgresql://swt_daemon@127.0.0.1:5432/db'
    """
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _drop_roles(dsn: str, names: roles.RoleNames) -> None:
    all_names = [names.owner, *names.runtime()]

    async def body(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1::text[])",
                           all_names)
        existing = [r["rolname"] for r in await conn.fetch(
            "SELECT quote_ident(rolname) AS rolname FROM pg_roles WHERE rolname = ANY($1::text[])", all_names)]
        if existing:
            # DROP OWNED BY the owner drops this (throwaway) database's tables with it.
            await conn.execute(f"DROP OWNED BY {', '.join(existing)}")
            await conn.execute(f"DROP ROLE {', '.join(existing)}")

    db_run(dsn, body)


@pytest.fixture(name="prefix")
def prefix_fixture(db_dsn: str) -> Iterator[str]:
    """A fresh role prefix on the test's database; the roles are dropped afterwards."""
    prefix = f"swt{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        _drop_roles(db_dsn, roles.RoleNames.of(prefix))


def _apply(dsn: str, prefix: str) -> roles.Outcome:
    async def body(conn: asyncpg.Connection) -> roles.Outcome:
        return await roles.apply(conn, prefix)

    outcome: roles.Outcome = db_run(dsn, body)
    return outcome


async def _acl(conn: asyncpg.Connection) -> list[Any]:
    return list(await conn.fetch(
        "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) AS owner, c.relacl::text AS acl"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('ledger', 'loyalty', 'switch', 'eod', 'portal') ORDER BY 1, 2"))


def _refused(dsn: str, sql: str) -> str:
    """Run ``sql`` as the DSN's role; it must be refused for want of a privilege. Returns the message."""

    async def main() -> str:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError as exc:
            return str(exc)
        finally:
            await conn.close()
        raise AssertionError(f"allowed: {sql}")

    return asyncio.run(main())


def _allowed(dsn: str, sql: str) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_the_password_verifier_is_scram_sha_256() -> None:
    """RFC 7677's example: the client proof and server signature our keys give are the RFC's."""
    import base64
    import hashlib
    import hmac

    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    client_key, stored_key, server_key = roles.scram_keys("pencil", salt, 4096)
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, hmac.new(stored_key, auth, "sha256").digest(), strict=True))
    assert base64.b64encode(proof).decode() == "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    assert base64.b64encode(hmac.new(server_key, auth, "sha256").digest()).decode() == \
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert hashlib.sha256(client_key).digest() == stored_key
    verifier = roles.scram_verifier("pencil", salt, 4096)
    assert verifier == (f"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${base64.b64encode(stored_key).decode()}:"
                        f"{base64.b64encode(server_key).decode()}")


@pytest.mark.db
def test_roles_twice_are_the_same_and_new_tables_get_grants(db_dsn: str, prefix: str) -> None:
    first = _apply(db_dsn, prefix)
    names = first.names
    assert set(first.created) == {names.owner, names.daemon, names.portal, names.report}
    acl_first = db_run(db_dsn, _acl)
    again = _apply(db_dsn, prefix)
    assert again.created == ()
    assert db_run(db_dsn, _acl) == acl_first
    assert {r["owner"] for r in acl_first} == {names.owner}, "the owner owns every table"
    # A table a later migration adds (here made by the superuser) is handed over and granted.
    db_run(db_dsn, lambda c: c.execute("CREATE TABLE loyalty.roles_probe (id int)"))
    _apply(db_dsn, prefix)
    assert _allowed(as_user(db_dsn, names.report), "SELECT * FROM loyalty.roles_probe") == []
    owner = db_run(db_dsn, lambda c: c.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'loyalty.roles_probe'::regclass"))
    assert owner == names.owner
    # The owner can re-apply the grants itself (it owns every object, though not the database).
    async def as_owner(conn: asyncpg.Connection) -> roles.Outcome:
        return await roles.apply(conn, prefix)

    assert db_run(as_user(db_dsn, names.owner), as_owner).created == ()
    # It cannot create roles, and says so in one line.
    async def other_prefix(conn: asyncpg.Connection) -> roles.Outcome:
        return await roles.apply(conn, prefix + "x")

    with pytest.raises(roles.RolesError, match="may not create roles"):
        db_run(as_user(db_dsn, names.owner), other_prefix)
    assert db_run(db_dsn, _acl) == db_run(db_dsn, _acl)


@pytest.mark.db
def test_runtime_roles_cannot_rewrite_history(db_dsn: str, prefix: str) -> None:
    names = _apply(db_dsn, prefix).names
    daemon, portal, report = (as_user(db_dsn, n) for n in names.runtime())
    for dsn in (daemon, portal):
        _refused(dsn, "ALTER TABLE ledger.entries DISABLE TRIGGER ALL")
        _refused(dsn, "ALTER TABLE ledger.journals DISABLE TRIGGER ALL")
        _refused(dsn, "UPDATE ledger.entries SET amount = amount + 1")
        _refused(dsn, "DELETE FROM ledger.journals")
        _refused(dsn, "DELETE FROM ledger.entries")
        _refused(dsn, "UPDATE ledger.accounts SET posted = posted + 100")
        _refused(dsn, "UPDATE ledger.accounts SET held = 0")
        _refused(dsn, "INSERT INTO ledger.accounts(owner_kind, owner_id, asset, normal_side, limit_mode, posted) "
                      "SELECT 'card', 'x', code, 'credit', 'none', 100 FROM ledger.assets LIMIT 1")
        _refused(dsn, "UPDATE loyalty.transactions SET amount = 1")
        _refused(dsn, "DELETE FROM loyalty.transactions")
        _refused(dsn, "TRUNCATE ledger.receipts")
    # The daemon may touch only a terminal's sign-on columns; keys go through provisioning.
    _refused(daemon, "UPDATE switch.terminals SET mac_alg = NULL")
    _refused(daemon, "UPDATE switch.terminals SET mac_key_sealed = NULL")
    _refused(daemon, "UPDATE switch.terminals SET status = 'active'")
    _refused(daemon, "INSERT INTO switch.terminals(terminal_id, merchant_id) VALUES ('TX', 'MX')")
    _allowed(daemon, "UPDATE switch.terminals SET signed_on = false, signed_off_at = now(), updated_at = now() "
                     "WHERE terminal_id = 'none'")
    _refused(daemon, "SELECT * FROM portal.users")
    # Terminal master keys and working PIN keys too; a sign-on's keys go through the one function.
    _refused(daemon, "UPDATE switch.terminals SET tmk_sealed = NULL")
    _refused(daemon, "UPDATE switch.terminals SET pin_alg = NULL, pin_key_sealed = NULL")
    installed = _allowed(daemon, "SELECT switch.install_working_keys('none', 'x919', '\\x00', 'tdes', '\\x00')")
    assert [tuple(r) for r in installed] == [(False,)]
    for dsn in (portal, report):
        _refused(dsn, "SELECT switch.install_working_keys('none', 'x919', '\\x00', 'tdes', '\\x00')")
    # A PIN try is counted by the daemon; it never sets a PIN nor reads the PIN key's table for others.
    _allowed(daemon, "UPDATE loyalty.card_pins SET failed_tries = failed_tries + 1, tried_at = now() "
                     "WHERE card_id = -1")
    _refused(daemon, "UPDATE loyalty.card_pins SET pin_hash = pin_hash")
    _refused(daemon, "DELETE FROM loyalty.card_pins")
    # A top-up card is marked redeemed only by its redemption's journal (a trigger, as the owner).
    for dsn in (daemon, portal):
        _refused(dsn, "UPDATE loyalty.vouchers SET status = 'redeemed', card_id = 1, journal_id = 1")
        _refused(dsn, "UPDATE loyalty.vouchers SET status = 'issued', card_id = NULL")
    _allowed(daemon, "SELECT count(*) FROM loyalty.vouchers")
    _allowed(daemon, "SELECT count(*) FROM loyalty.chip_data")
    _refused(daemon, "DELETE FROM loyalty.chip_data")
    # The portal provisions terminals (keys included).
    _allowed(portal, "UPDATE switch.terminals SET mac_alg = NULL, mac_key_sealed = NULL WHERE terminal_id = 'none'")
    # Reporting reads everything and writes nothing.
    assert _allowed(report, "SELECT count(*) FROM ledger.entries")[0][0] == 0
    _allowed(report, "SELECT * FROM loyalty.transactions LIMIT 1")
    _allowed(report, "SELECT id, member_id, pan_masked, status FROM loyalty.cards LIMIT 1")
    # Card numbers: neither their sealed form, nor their hash, nor the keys are reporting's.
    _refused(report, "SELECT pan_sealed FROM loyalty.cards")
    _refused(report, "SELECT pan_hash FROM loyalty.cards")
    _refused(report, "SELECT * FROM loyalty.card_keys")
    # The keys are the owner's to make (db upgrade); no runtime role may replace them.
    _refused(portal, "UPDATE loyalty.card_keys SET sealed_data_key = sealed_lookup_key")
    _refused(daemon, "DELETE FROM loyalty.card_keys")
    _allowed(report, "SELECT terminal_id, mac_alg FROM switch.terminals")
    _refused(report, "SELECT mac_key_sealed FROM switch.terminals")
    _refused(report, "SELECT tmk_sealed FROM switch.terminals")
    _refused(report, "SELECT pin_key_sealed FROM switch.terminals")
    _refused(report, "SELECT pin_hash FROM loyalty.card_pins")
    _refused(report, "SELECT * FROM loyalty.pin_keys")
    _allowed(report, "SELECT card_id, failed_tries FROM loyalty.card_pins")
    _refused(report, "SELECT password_hash FROM portal.users")
    _refused(report, "SELECT * FROM portal.sessions")
    _refused(report, "INSERT INTO ledger.receipts(idempotency_key, content_hash) VALUES ('k', '\\x00')")
    _refused(report, "UPDATE switch.terminals SET signed_on = false")
    _refused(report, "SELECT * FROM ledger.post_batch('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
                     "'{}', '{}', '{}', '{}')")
    # No runtime role owns anything.
    owned = db_run(db_dsn, lambda c: c.fetchval(
        "SELECT count(*) FROM pg_class WHERE pg_get_userbyid(relowner) = ANY($1::text[])", list(names.runtime())))
    assert owned == 0


def _terminal(port: int) -> Terminal:
    t = Terminal(port, "nac2", "pos")
    assert t.call({"t": "0800", "7": utc_stamp(), "11": next_stan(), "41": TID.ljust(8), "70": "001"})["39"] == "00"
    return t


def _call(t: Terminal, fields: dict[str, str]) -> dict[str, str]:
    t.send(fields, mac=MAC)
    raw = t.recv_raw()
    assert check_mac(raw, "pos", *MAC)
    return decode(raw, "pos")


@pytest.mark.e2e
def test_daemon_serves_as_its_role_and_eod_is_not_its_job(db_dsn: str, prefix: str, tmp_path: Path) -> None:
    names = _apply(db_dsn, prefix).names
    # Provisioning is the owner's (here the superuser that ran the migrations, through the CLI).
    (tmp_path / "admin").mkdir()
    admin = Daemon(tmp_path / "admin", db_dsn, [POS_LISTENER])
    admin.cli("program", "add", "ROLE", "--name", "Role alliance", "--kind", "alliance",
              "--issue-price-minor", "5", "--redeem-value-minor", "4")
    admin.cli("merchant", "add", MID, "--name", "Roles", "--program", "ROLE", "--earn-rate", "1")
    admin.cli("terminal", "add", TID, "--merchant", MID, "--mac-alg", "cmac-aes", "--mac-key", CMAC_KEY_HEX)
    admin.cli("card", "issue", CARD, "--expiry", "3012")
    (tmp_path / "daemon").mkdir()
    d = Daemon(tmp_path / "daemon", as_user(db_dsn, names.daemon), [POS_LISTENER]).start()
    try:
        with _terminal(d.ports["pos"]) as t:
            earn = purchase(TID, MID, pan=CARD, amount=10_000)
            first = _call(t, earn)
            assert first["39"] == "00", first
            duplicate = _call(t, earn)
            assert (duplicate["39"], duplicate["37"], duplicate["38"]) == ("00", first["37"], first["38"])
            reversal = {**earn, "t": "0400", "11": next_stan(), "90": "0200" + earn["11"] + earn["7"] + "0" * 22}
            reversed_ = _call(t, reversal)
            assert (reversed_["t"], reversed_["39"]) == ("0410", "00"), reversed_
            # The terminal closes its batch (the daemon writes eod.terminal_batches): nothing left in it.
            settle = {"t": "0500", "3": "920000", "7": utc_stamp(), "11": next_stan(), "41": TID.ljust(8),
                      "42": MID.ljust(15), "60": "000001", "74": f"{0:010d}", "86": f"{0:016d}",
                      "76": f"{0:010d}", "88": f"{0:016d}"}
            closed = _call(t, settle)
            assert (closed["t"], closed["39"]) == ("0510", "00"), closed
        # End of day is not the daemon's: its role cannot cut the day over; one line, no traceback.
        res = d.cli("eod", "run", check=False)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr and "permission denied" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    finally:
        assert d.stop() == 0
    assert "permission denied" not in d.log_text(), "a background task of the daemon lacks a grant"
    journals = db_run(db_dsn, lambda c: c.fetchval("SELECT count(*) FROM ledger.journals"))
    assert journals == 2, "the purchase and its reversal, the duplicate posted nothing"
    batches = db_run(db_dsn, lambda c: c.fetchval("SELECT count(*) FROM eod.terminal_batches WHERE terminal_id = $1",
                                                   TID))
    assert batches >= 1, "the daemon recorded the terminal's batch"
    assert db_run(db_dsn, check_books) == []


@pytest.mark.e2e
def test_a_role_without_its_grants_fails_in_one_line(db_dsn: str, prefix: str, tmp_path: Path) -> None:
    names = _apply(db_dsn, prefix).names
    db_run(db_dsn, lambda c: c.execute(
        f"REVOKE SELECT ON public.switchd_schema_migrations FROM {names.daemon}"))
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", as_user(db_dsn, names.daemon), [POS_LISTENER])
    with pytest.raises(HarnessError):
        d.start()
    log = d.log_text()
    assert "Traceback" not in log
    failed = [line for line in log.splitlines() if "start_failed" in line]
    assert len(failed) == 1, log
    assert "permission denied for table switchd_schema_migrations" in failed[0]
    assert "switchd db roles" in failed[0]
    # A command as that role: the same one line.
    res = d.cli("db", "status", check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("switchd: database: permission denied"), res.stderr
    # The portal on its own, as that role: it checks the schema before serving.
    (tmp_path / "p").mkdir()
    p = Daemon(tmp_path / "p", as_user(db_dsn, names.daemon), [POS_LISTENER], extra={"portal": {"port": 0}})
    res = p.cli("portal", check=False, timeout_s=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [
        "switchd: database: permission denied for table switchd_schema_migrations: "
        "run 'switchd db roles' as the owner, or connect as the owner"], res.stderr


@pytest.mark.db
async def test_the_portal_serves_every_route_as_its_role(db_dsn: str, prefix: str) -> None:
    """The route x role walk of test_portal_permissions, with the portal connected as its role."""
    import test_portal_permissions as walk
    from ledger_support import ledger_settings
    from portal_support import MASTER_KEY, PortalEnv, test_settings

    from ledger import db as ledger_db
    from ledger.loyalty import demo as ledger_demo
    from portal import demo as portal_demo
    from portal.app import create_app

    admin = await asyncpg.connect(db_dsn, timeout=10)
    try:
        async with admin.transaction():
            await ledger_demo.seed(admin, cards=3)
            await portal_demo.seed_users(admin)
        names = (await roles.apply(admin, prefix)).names
    finally:
        await admin.close()
    pool = await ledger_db.create_pool(as_user(db_dsn, names.portal), 1, 6)
    try:
        app = create_app(test_settings(), pool, ledger_settings(), MASTER_KEY)
        async with app.router.lifespan_context(app):
            await walk.test_route_role_matrix(PortalEnv(app, pool, test_settings()))
        assert await check_books(pool) == []
    finally:
        await pool.close()


@pytest.mark.db
def test_the_command_twice_with_a_password(db_dsn: str, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "cli").mkdir()
    admin = Daemon(tmp_path / "cli", db_dsn, [POS_LISTENER])
    secret = tmp_path / "report.pw"
    secret.write_text("s3cret-report\n", encoding="utf-8")
    first = admin.cli("db", "roles", "--prefix", prefix, "--password-file", f"report={secret}")
    assert first.stdout.splitlines() == [f"created role {prefix}_{k}" for k in roles.KINDS] + ["grants applied"]
    again = admin.cli("db", "roles", "--prefix", prefix)
    assert again.stdout.splitlines() == [f"kept role {prefix}_{k}" for k in roles.KINDS] + ["grants applied"]
    with_password = db_run(db_dsn, lambda c: c.fetch(
        "SELECT rolname FROM pg_authid WHERE rolname LIKE $1 AND rolpassword IS NOT NULL", f"{prefix}\\_%"))
    assert [r["rolname"] for r in with_password] == [f"{prefix}_report"]
    stored = db_run(db_dsn, lambda c: c.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                                  f"{prefix}_report"))
    assert stored.startswith("SCRAM-SHA-256$4096:") and "s3cret" not in stored
    # Stored as sent (PostgreSQL would hash a string it did not take for a verifier): the password's.
    import base64

    salt = base64.b64decode(stored.split(":", 1)[1].split("$", 1)[0])
    assert stored == roles.scram_verifier("s3cret-report", salt)
    bad = admin.cli("db", "roles", "--prefix", prefix, "--password-file", f"auditor={secret}", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("switchd: --password-file") and "Traceback" not in bad.stderr


@pytest.mark.db
def test_key_changes_are_recorded_who_and_when_and_no_runtime_role_can_forge_them(db_dsn: str, prefix: str) -> None:
    names = _apply(db_dsn, prefix).names
    daemon, portal, report = (as_user(db_dsn, n) for n in names.runtime())
    admin_user = db_run(db_dsn, lambda c: c.fetchval(
        "INSERT INTO switch.terminals(terminal_id, merchant_id, mac_alg, mac_key_sealed) "
        "VALUES ('TKEY0001', 'M1', 'cmac-aes', '\\x01'), ('TKEY0002', 'M1', NULL, NULL) RETURNING session_user"))
    # A sign-on (the daemon) is no key change; a key removed through the portal is one.
    _allowed(daemon, "UPDATE switch.terminals SET signed_on = true, signed_on_at = now() WHERE terminal_id LIKE 'TKEY%'")
    _allowed(portal, "UPDATE switch.terminals SET mac_alg = NULL, mac_key_sealed = NULL WHERE terminal_id = 'TKEY0001'")
    rows = _allowed(report, "SELECT terminal_id, changed_by, mac_alg_before, mac_alg_after, changed_at IS NOT NULL "
                            "FROM switch.terminal_key_changes ORDER BY id")
    assert [tuple(r) for r in rows] == [("TKEY0001", admin_user, None, "cmac-aes", True),
                                        ("TKEY0001", names.portal, "cmac-aes", None, True)]
    for dsn in (daemon, portal, report):
        _refused(dsn, "DELETE FROM switch.terminal_key_changes")
        _refused(dsn, "UPDATE switch.terminal_key_changes SET changed_by = 'someone'")
        _refused(dsn, "INSERT INTO switch.terminal_key_changes(terminal_id, changed_by) VALUES ('TKEY0001', 'x')")


@pytest.mark.e2e
def test_serve_runs_its_portal_as_the_portal_role(db_dsn: str, prefix: str, tmp_path: Path) -> None:
    names = _apply(db_dsn, prefix).names
    # As documented: the owner's `db upgrade`, with the master key, makes the card-number keys.
    (tmp_path / "owner").mkdir()
    assert "card number" not in Daemon(tmp_path / "owner", db_dsn, [POS_LISTENER]).cli("db", "upgrade").stderr
    (tmp_path / "serve").mkdir()
    d = Daemon(tmp_path / "serve", as_user(db_dsn, names.daemon), [POS_LISTENER],
               extra={"portal": {"enabled": True, "port": 0, "dsn": as_user(db_dsn, names.portal)}}).start()
    try:
        deadline = time.monotonic() + 60
        while not d.events("portal_ready") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert d.events("portal_ready"), d.log_tail()
        logins = db_run(db_dsn, lambda c: c.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() AND usename = ANY($1)",
            [names.daemon, names.portal]))
        assert sorted(r["usename"] for r in logins) == sorted([names.daemon, names.portal])
    finally:
        assert d.stop() == 0
    assert "permission denied" not in d.log_text()


def _switch_answer(code: str, processing: str, mti: str = "0210") -> bytes:
    """A stored switch response (switch.dedup's form) with field 39 ``code``."""
    return json.dumps({"v": 1, "fields": {"t": mti, "3": processing, "39": code}}, separators=(",", ":")).encode()


async def _refused_async(dsn: str, sql: str) -> None:
    """As _refused, from a running event loop."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
    finally:
        await conn.close()


async def _allowed_async(dsn: str, sql: str) -> list[Any]:
    """As _allowed, from a running event loop."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_receipts_are_stored_only_through_the_owners_function(db_dsn: str, prefix: str) -> None:
    """A forged approval cannot be stored for a request that never posted: the runtime roles
    cannot insert receipts; the function they may call refuses a receipt naming a journal its
    transaction did not post, and an approval without a journal; normal traffic still works."""
    from ledger_support import ledger_settings

    from ledger import db as ledger_db
    from ledger.engine import Ledger, Receipt
    from ledger.loyalty import demo as ledger_demo
    from ledger.loyalty.exchange import ExchangeError, convert_points
    from ledger.loyalty.operations import Loyalty
    from ledger.loyalty.outcomes import Channel, Outcome, Reason, Request

    admin = await asyncpg.connect(db_dsn, timeout=10)
    try:
        async with admin.transaction():
            await ledger_demo.seed(admin, cards=3)
        names = (await roles.apply(admin, prefix)).names
    finally:
        await admin.close()
    pan = ledger_demo.demo_pan(1)

    def request(stan: int, amount: int, account: str = "00", currency: str | None = "156") -> Request:
        key = ("T0000001", f"{stan:06d}", "0101120000")
        return Request(key="|".join(key), terminal_id=key[0], merchant_id="M0001", pan=pan, amount=amount,
                       currency=currency, rrn=f"7{stan:011d}", stan=key[1], account=account,
                       receipt_key="iso:" + ":".join(key), receipt_hash=bytes(32))

    def answer(processing: str, req: Request, outcome: Outcome) -> Receipt:
        code = "00" if outcome.reason is Reason.APPROVED else "51"
        assert req.receipt_key is not None
        return Receipt(req.receipt_key, bytes(32), _switch_answer(code, processing))

    pool = await ledger_db.create_pool(as_user(db_dsn, names.daemon), 1, 4)
    try:
        async with Ledger(pool, ledger_settings()) as ledger:
            loyalty = Loyalty(ledger)
            earn = request(901, 10_000)
            first = await loyalty.earn(earn, functools.partial(answer, "000000", earn))
            assert first.reason is Reason.APPROVED and first.receipt_stored, first
            again = await loyalty.earn(earn, functools.partial(answer, "000000", earn))
            assert again.replayed and again.journal_id == first.journal_id
            short = request(902, 1_000_000, "65", None)
            declined = await loyalty.redeem(short, functools.partial(answer, "006500", short))
            assert declined.reason is Reason.INSUFFICIENT
            asked = request(903, 0, "65", None)
            inquiry = await loyalty.inquiry(asked, functools.partial(answer, "316500", asked))
            assert inquiry.reason is Reason.APPROVED and inquiry.journal_id is None
            # An exchange declined off the wire is recorded too, as a runtime role may.
            card_id = int(await pool.fetchval("SELECT min(id) FROM loyalty.cards"))
            with pytest.raises(ExchangeError):
                await convert_points(ledger, pool, card_id, "ALLY", "CAFE", 10, "no-rate-0001", Channel.API)
            assert await pool.fetchval("SELECT reason FROM loyalty.transactions WHERE idempotency_key = $1",
                                       f"exchange:api:{card_id}:no-rate-0001") == "invalid_txn"
        stored = {r["idempotency_key"]: r["journal_id"] for r in await pool.fetch(
            "SELECT idempotency_key, journal_id FROM ledger.receipts")}
        assert stored == {earn.receipt_key: first.journal_id, short.receipt_key: None, asked.receipt_key: None}
        assert await check_books(pool) == []
    finally:
        await pool.close()

    daemon, portal, report = (as_user(db_dsn, n) for n in names.runtime())
    for dsn in (daemon, portal, report):
        await _refused_async(dsn, "INSERT INTO ledger.receipts(idempotency_key, content_hash, payload) "
                      "VALUES ('iso:T0000001:000904:0101120000', '\\x00', '\\x00')")
    await _refused_async(report, "SELECT ledger.store_receipts(ARRAY['k'], ARRAY['\\x00'::bytea], ARRAY['\\x00'::bytea], NULL)")

    async def store(dsn: str, key: str, payload: bytes | None, journal_id: int | None) -> list[str]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [r[0] for r in await conn.fetch(
                "SELECT * FROM ledger.store_receipts(ARRAY[$1::text], ARRAY['\\x00'::bytea], ARRAY[$2::bytea], "
                "ARRAY[$3::bigint])", key, payload, journal_id)]
        finally:
            await conn.close()

    unposted = "iso:T0000001:000904:0101120000"
    for dsn in (daemon, portal):
        # An approved redemption for a key that never posted: the forgery this guards against.
        with pytest.raises(asyncpg.CheckViolationError, match="approves a request that posted nothing"):
            await store(dsn, unposted, _switch_answer("00", "006500"), None)
        with pytest.raises(asyncpg.CheckViolationError, match="approves a request that posted nothing"):
            await store(dsn, "seat:T0000001:forged", json.dumps(
                {"v": 1, "seat": {"kind": "redeem", "reason": "approved"}}).encode(), None)
        # A receipt that claims a journal: only the transaction that posted it may store one.
        for journal_id in (first.journal_id, 10**12):
            with pytest.raises(asyncpg.CheckViolationError, match="this transaction did not post"):
                await store(dsn, unposted, None, journal_id)
            with pytest.raises(asyncpg.CheckViolationError, match="this transaction did not post"):
                await store(dsn, unposted, _switch_answer("00", "006500"), journal_id)
    # The answer of a posted request is the truth (its journal stands under the request's key);
    # an approval under a key that holds a receipt already stores nothing.
    assert await store(daemon, earn.receipt_key or "", _switch_answer("00", "000000"), None) == []
    # What posts nothing may be stored: a decline, an inquiry's balance, a reversal's answer.
    assert await store(daemon, unposted, _switch_answer("51", "006500"), None) == [unposted]
    inquiry_key = "iso:T0000001:000905:0101120000"
    assert await store(portal, inquiry_key, _switch_answer("00", "316500"), None) == [inquiry_key]
    reversal_key = "iso:T0000001:000906:0101120000"
    assert await store(daemon, reversal_key, _switch_answer("00", "006500", "0410"), None) == [reversal_key]
    # A transaction record with a journal is the journal's own (written by its trigger): a
    # runtime role records only what posted nothing.
    for dsn in (daemon, portal):
        await _refused_async(dsn, "INSERT INTO loyalty.transactions(journal_id, idempotency_key, business_date, txn_type, reason) "
                      f"VALUES ({first.journal_id + 1}, 'forged', current_date, 'redeem', 'approved')")
        await _refused_async(dsn, "INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, "
                      "points_delta) VALUES ('forged', current_date, 'redeem', 'insufficient', -100)")
    await _allowed_async(daemon, "INSERT INTO loyalty.transactions(idempotency_key, business_date, txn_type, reason, card_id) "
                     "VALUES ('T0000001|000907|0101120000', current_date, 'redeem', 'insufficient', 1) RETURNING id")
