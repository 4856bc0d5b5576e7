"""Least-privilege database roles: an owner for migrations and login roles for each runtime part.

``switchd db roles`` (run by a superuser, or a role with CREATEROLE that owns the schemas) calls
:func:`apply`. With the prefix ``switchd`` it makes:

- ``switchd_owner`` (LOGIN): owns the schemas, their tables, sequences and functions, and
  ``public.switchd_schema_*``. It runs ``db upgrade``, end of day, provisioning from the CLI.
  It is the only role that can alter tables or disable their triggers.
- ``switchd_daemon``: reads every table but the portal's; inserts transaction records
  (``loyalty.transactions``, without their journal or what a journal moved: declines and
  inquiries), card accounts (``ledger.accounts``, without the balance columns) and terminal
  batches (``eod.terminal_batches``, which it also updates on settlement); updates only the
  sign-on columns of ``switch.terminals``; posts only through ``ledger.post_batch`` and stores
  receipts only through ``ledger.store_receipts`` (both SECURITY DEFINER, owned by the owner:
  no receipt names a journal its transaction did not post, and none without a journal approves
  what only a posting approves).
- ``switchd_portal``: what the daemon may, plus writing the portal's, the loyalty programme's
  and the terminals' tables (it is a provisioning path: terminal keys change through it or as
  the owner) and an account's status. No UPDATE or DELETE on any ``ledger`` table but
  ``ledger.accounts.status``, none on ``loyalty.transactions``.
- ``switchd_report``: SELECT on every table but the secrets (sessions, activation codes, API
  tokens, password hashes, sealed terminal keys, card-number keys and sealed card numbers), nothing else.

Runtime roles own nothing, so none can disable a trigger or alter a table. Grants are
re-applied exactly (revoked, then granted) on every run, so tables added by a later
``db upgrade`` get them when ``db roles`` runs again; objects a superuser created are
handed to the owner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

from ledger.errors import SwitchdError, first_line

SCHEMAS = ("ledger", "loyalty", "switch", "eod", "portal")
BOOKKEEPING_TABLES = ("public.switchd_schema_migrations", "public.switchd_schema_functions")
KINDS = ("owner", "daemon", "portal", "report")
PASSWORD_LENGTH_MAX = 1_000
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SCRAM_SALT_BYTES = 16
PREFIX_LENGTH_MAX = 40  # role names are at most 63 bytes; the longest suffix is "_daemon"
POST_FUNCTION = "ledger.post_batch"
# The balance columns of ledger.accounts (posted, held) take their defaults: only post_batch moves them.
ACCOUNT_INSERT_COLUMNS = ("owner_kind", "owner_id", "purpose", "asset", "normal_side", "limit_mode")
TERMINAL_SIGN_ON_COLUMNS = ("signed_on", "signed_on_at", "signed_off_at", "updated_at")
# SECURITY DEFINER functions beside post_batch, and the runtime roles that may call each.
DEFINER_FUNCTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Receipts: the runtime roles' only way to store one (ledger/sql/ledger.store_receipts.sql).
    ("ledger.store_receipts(text[], bytea[], bytea[], bigint[])", ("daemon", "portal")),
    ("loyalty.expire_lots(text, date, text, bigint, bigint[])", ()),
    ("loyalty.move_residual(text, date, integer, text, bigint, integer)", ()),
    ("loyalty.set_points_expiry(text, integer)", ("portal",)),
)
# nextval on the journal id sequence is post_batch's alone.
OWNER_ONLY_SEQUENCES = ("ledger.journal_id_seq",)

# The columns of loyalty.transactions a runtime role writes: the record of an outcome that posted
# nothing (ledger.loyalty.operations, ledger.loyalty.exchange). A record with a journal, and what
# a journal moved, are written only by the journal's own trigger (loyalty.record_journals, in
# post_batch, as the owner): no runtime role can make a row look approved without its journal.
TRANSACTION_INSERT_COLUMNS = ("idempotency_key", "business_date", "txn_type", "reason", "rrn", "stan", "terminal_id",
                              "merchant_id", "card_id", "program", "amount", "currency", "original_journal_id",
                              "channel", "operator_ref", "target_program")
# (table, privileges) the daemon needs beyond SELECT: every write it makes outside post_batch.
# Not ledger.receipts: receipts are stored through ledger.store_receipts (DEFINER_FUNCTIONS).
DAEMON_WRITES: tuple[tuple[str, str], ...] = (
    ("loyalty.transactions", f"INSERT ({', '.join(TRANSACTION_INSERT_COLUMNS)})"),
    ("ledger.accounts", f"INSERT ({', '.join(ACCOUNT_INSERT_COLUMNS)})"),
    ("eod.terminal_batches", "INSERT, UPDATE"),
    ("switch.terminals", f"UPDATE ({', '.join(TERMINAL_SIGN_ON_COLUMNS)})"),
    # Top-up cards redeemed at terminals: failed guesses counted (a card is marked redeemed only by
    # its journal's trigger: loyalty.vouchers is OWNER_WRITTEN_TABLES').
    ("loyalty.voucher_failures", "INSERT, UPDATE"),
    ("loyalty.card_pins", "UPDATE (failed_tries, tried_at)"),  # a PIN try counts (ledger.loyalty.pins)
    ("loyalty.chip_data", "INSERT"),  # what a dispute needs of a purchase's chip data
)
# A sign-on's working keys are installed only through this SECURITY DEFINER function (the
# daemon cannot write a terminal's key columns); nobody else may call it.
WORKING_KEYS_FUNCTION = "switch.install_working_keys(text, text, bytea, text, bytea)"
# The portal's, beyond the daemon's: whole schemas it administers, and an account's status.
PORTAL_WRITE_SCHEMAS = ("loyalty", "portal", "switch")
PORTAL_WRITES: tuple[tuple[str, str], ...] = (
    ("ledger.assets", "INSERT"),
    ("ledger.accounts", "UPDATE (status)"),
)
DAEMON_UNREAD_SCHEMAS = ("portal",)
# Secrets reporting never reads: sessions, activation codes and API tokens (whole tables), and
# password hashes and sealed terminal keys (columns; the rest of those tables it reads).
REPORT_HIDDEN_TABLES = ("portal.sessions", "portal.member_sessions", "portal.member_activations",
                        "portal.api_tokens", "loyalty.card_keys", "loyalty.pin_keys")
REPORT_HIDDEN_COLUMNS: dict[str, tuple[str, ...]] = {
    "switch.terminals": ("mac_key_sealed", "tmk_sealed", "pin_key_sealed"),
    "loyalty.cards": ("pan", "pan_hash", "pan_sealed"),
    "loyalty.card_pins": ("pin_hash",),
    "portal.users": ("password_hash",),
    "portal.member_logins": ("password_hash",),
    "loyalty.vouchers": ("code_hash",),
}
# Written only by SECURITY DEFINER trigger functions (the owner's): no runtime role writes them.
# The card-number keys are made by `db upgrade` (the owner) and never change after; top-up cards
# by `switchd voucher batch create` (the owner), marked redeemed by their journal's trigger and
# expired by the end of day.
OWNER_WRITTEN_TABLES = ("switch.terminal_key_changes", "loyalty.card_keys", "loyalty.point_lots", "loyalty.lot_moves",
                        "loyalty.residual_breakage", "loyalty.vouchers")
# Append-only records: even the portal, which writes the rest of its schema, only inserts.
INSERT_ONLY_TABLES = ("loyalty.transactions",)


class RolesError(SwitchdError):
    """The roles could not be set up; ``str()`` says why."""


@dataclass(frozen=True)
class RoleNames:
    """The four role names for a prefix.

    >>> RoleNames.of("switchd").daemon
    'switchd_daemon'
    """

    owner: str
    daemon: str
    portal: str
    report: str

    @classmethod
    def of(cls, prefix: str) -> RoleNames:
        if not prefix or len(prefix) > PREFIX_LENGTH_MAX or not prefix.replace("_", "a").isalnum() \
                or not prefix.isascii() or prefix[0].isdigit() or prefix != prefix.lower():
            raise RolesError(f"role prefix {prefix!r}: lower-case letters, digits and _, "
                             f"at most {PREFIX_LENGTH_MAX}, not starting with a digit")
        return cls(*(f"{prefix}_{k}" for k in KINDS))

    def runtime(self) -> tuple[str, str, str]:
        return self.daemon, self.portal, self.report


def privilege_message(exc: BaseException) -> str:
    """The one line for a missing grant: what was refused and how to fix it.

    >>> privilege_message(Exception("permission denied for table switchd_schema_migrations"))
    "database: permission denied for table switchd_schema_migrations: run 'switchd db roles' as the owner, or connect as the owner"
    """
    return f"database: {first_line(exc)}: run 'switchd db roles' as the owner, or connect as the owner"


def scram_keys(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) of SCRAM-SHA-256 (RFC 5802, RFC 7677) for an ASCII password.

    SASLprep leaves printable ASCII as it is, so no normalisation is needed for what we accept.
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return client_key, hashlib.sha256(client_key).digest(), hmac.new(salted, b"Server Key", "sha256").digest()


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for ``password`` (``rolpassword``), computed on this side.

    >>> scram_verifier("pencil", bytes(16), 4096)[:44]
    'SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAA==$'
    """
    salt = secrets.token_bytes(SCRAM_SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = scram_keys(password, salt, iterations)
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


async def _ident(conn: asyncpg.Connection, fmt: str, *args: str) -> str:
    # DDL takes no parameters: let the server quote names (%I) and literals (%L).
    sql: str = await conn.fetchval(f"SELECT format($1, {', '.join(f'${i + 2}::text' for i in range(len(args)))})",
                                   fmt, *args)
    return sql


async def _ensure_role(conn: asyncpg.Connection, name: str, password: str | None) -> bool:
    created = False
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
        create = await _ident(conn, "CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", name)
        me = await conn.fetchval("SELECT current_user")
        try:
            await conn.execute(create)
        except asyncpg.InsufficientPrivilegeError:
            raise RolesError(f"role {name} does not exist and {me} may not create roles: "
                             "run 'switchd db roles' once as a superuser (or a CREATEROLE role)") from None
        created = True
    if password is not None:
        if len(password) > PASSWORD_LENGTH_MAX or not (password.isascii() and password.isprintable()):
            raise RolesError(f"password for {name}: printable ASCII, at most {PASSWORD_LENGTH_MAX} characters")
        # Hashed here: the clear password never reaches the server (nor its statement log).
        await conn.execute(await _ident(conn, "ALTER ROLE %I PASSWORD %L", name, scram_verifier(password)))
    return created


async def _relations(conn: asyncpg.Connection, kinds: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, n.nspname || '.' || c.relname AS plain,"
        "       pg_get_userbyid(c.relowner) AS owner, c.relkind,"
        "       EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "               AND d.deptype IN ('a', 'i')) AS linked"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname = ANY($1::text[]) OR n.nspname || '.' || c.relname = ANY($2::text[]))"
        "   AND c.relkind = ANY($3::char[]) ORDER BY 1",
        list(SCHEMAS), list(BOOKKEEPING_TABLES), list(kinds)))


async def _schemas(conn: asyncpg.Connection) -> list[str]:
    return [r["nspname"] for r in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[]) ORDER BY 1", list(SCHEMAS))]


async def _hand_to_owner(conn: asyncpg.Connection, owner: str) -> None:
    """Make ``owner`` own the schemas and everything in them (a superuser's upgrade made some)."""
    for schema in await _schemas(conn):
        await conn.execute(await _ident(conn, "ALTER SCHEMA %I OWNER TO %I", schema, owner))
    for rel in await _relations(conn, "rvmpfS"):
        # A serial's sequence follows its table and cannot be given away alone.
        if rel["owner"] != owner and not (rel["relkind"] == "S" and rel["linked"]):
            kind = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}.get(
                rel["relkind"], "TABLE")
            await conn.execute(f"ALTER {kind} {rel['name']} OWNER TO " + await _ident(conn, "%I", owner))
    for fn in await conn.fetch(
            "SELECT p.oid::regprocedure::text AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            " WHERE n.nspname = ANY($1::text[]) AND pg_get_userbyid(p.proowner) <> $2 AND p.prokind = 'f'",
            list(SCHEMAS), owner):
        await conn.execute(f"ALTER FUNCTION {fn['sig']} OWNER TO " + await _ident(conn, "%I", owner))


async def _grant(conn: asyncpg.Connection, names: RoleNames) -> None:
    q = {r: await _ident(conn, "%I", r) for r in (names.owner, *names.runtime())}
    runtime = ", ".join(q[r] for r in names.runtime())
    db = await _ident(conn, "%I", await conn.fetchval("SELECT current_database()"))
    # The owner re-running `db roles` after an upgrade may not own the database: those grants stay.
    if await conn.fetchval("SELECT pg_has_role(current_user, d.datdba, 'USAGE') OR r.rolsuper "
                           "FROM pg_database d, pg_roles r WHERE d.datname = current_database() "
                           "AND r.rolname = current_user"):
        await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {runtime}, {q[names.owner]}")
        # The owner creates the schemas of later migrations.
        await conn.execute(f"GRANT CREATE ON DATABASE {db} TO {q[names.owner]}")
    tables = [r["name"] for r in await _relations(conn, "rvmpf")]
    sequences = [r for r in await _relations(conn, "S")]
    schemas = [await _ident(conn, "%I", s) for s in await _schemas(conn)]
    # Exact on every run: what a previous version granted and this one does not is taken back.
    if tables:
        await conn.execute(f"REVOKE ALL ON {', '.join(tables)} FROM {runtime}")
        await conn.execute(f"GRANT SELECT ON {', '.join(tables)} TO {q[names.portal]}")
        # The daemon reads nothing of the portal's (users, sessions, tokens, mail).
        switch_side = [r["name"] for r in await _relations(conn, "rvmpf")
                       if r["plain"].split(".")[0] not in DAEMON_UNREAD_SCHEMAS]
        await conn.execute(f"GRANT SELECT ON {', '.join(switch_side)} TO {q[names.daemon]}")
    await _grant_report(conn, q[names.report])
    if sequences:
        await conn.execute(f"REVOKE ALL ON SEQUENCE {', '.join(s['name'] for s in sequences)} FROM {runtime}")
        usable = [s["name"] for s in sequences if s["plain"] not in OWNER_ONLY_SEQUENCES]
        if usable:
            await conn.execute(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(usable)} "
                               f"TO {q[names.daemon]}, {q[names.portal]}")
    if schemas:
        await conn.execute(f"REVOKE CREATE ON SCHEMA {', '.join(schemas)} FROM PUBLIC, {runtime}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {runtime}")
    for table, privileges in DAEMON_WRITES:
        await conn.execute(f"GRANT {privileges} ON {table} TO {q[names.daemon]}, {q[names.portal]}")
    for table, privileges in PORTAL_WRITES:
        await conn.execute(f"GRANT {privileges} ON {table} TO {q[names.portal]}")
    administered = [r["name"] for r in await _relations(conn, "rp")
                    if r["plain"].split(".")[0] in PORTAL_WRITE_SCHEMAS
                    and r["plain"] not in INSERT_ONLY_TABLES + OWNER_WRITTEN_TABLES]
    if administered:
        await conn.execute(f"GRANT INSERT, UPDATE, DELETE ON {', '.join(administered)} TO {q[names.portal]}")
    # Balances move only through post_batch, which runs as the owner with a pinned search_path.
    post = await conn.fetchval("SELECT to_regprocedure($1)::text", _post_signature())
    if post is None:
        raise RolesError(f"{POST_FUNCTION} does not exist: run 'switchd db upgrade' first")
    await conn.execute(f"REVOKE ALL ON FUNCTION {post} FROM PUBLIC, {runtime}")
    await conn.execute(f"GRANT EXECUTE ON FUNCTION {post} TO {q[names.daemon]}, {q[names.portal]}")
    working = await conn.fetchval("SELECT to_regprocedure($1)::text", WORKING_KEYS_FUNCTION)
    if working is None:
        raise RolesError(f"{WORKING_KEYS_FUNCTION} does not exist: run 'switchd db upgrade' first")
    await conn.execute(f"REVOKE ALL ON FUNCTION {working} FROM PUBLIC, {runtime}")
    await conn.execute(f"GRANT EXECUTE ON FUNCTION {working} TO {q[names.daemon]}")
    # The other SECURITY DEFINER writers of the ledger: end of day's (the owner's alone) and a
    # program's expiry setting (the portal's too: it is a provisioning path).
    for signature, granted in DEFINER_FUNCTIONS:
        fn = await conn.fetchval("SELECT to_regprocedure($1)::text", signature)
        if fn is None:
            raise RolesError(f"{signature} does not exist: run 'switchd db upgrade' first")
        await conn.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC, {runtime}")
        if granted:
            await conn.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO {', '.join(q[getattr(names, k)] for k in granted)}")


async def _grant_report(conn: asyncpg.Connection, report: str) -> None:
    """SELECT on every table but the secrets (REPORT_HIDDEN_*)."""
    plain = [r for r in await _relations(conn, "rvmpf")
             if r["plain"] not in REPORT_HIDDEN_TABLES and r["plain"] not in REPORT_HIDDEN_COLUMNS]
    if plain:
        await conn.execute(f"GRANT SELECT ON {', '.join(r['name'] for r in plain)} TO {report}")
    for table, hidden in REPORT_HIDDEN_COLUMNS.items():
        schema, name = table.split(".")
        columns = [c for (c,) in await conn.fetch(
            "SELECT quote_ident(column_name) FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 AND NOT column_name = ANY($3::text[]) "
            "ORDER BY ordinal_position", schema, name, list(hidden))]
        if columns:
            await conn.execute(f"GRANT SELECT ({', '.join(columns)}) ON {table} TO {report}")


def _post_signature() -> str:
    return (f"{POST_FUNCTION}(text[], bytea[], text[], bigint[], bigint[], integer[], jsonb[], boolean[], "
            "integer[], bigint[], bigint[], bigint[], text[])")


@dataclass(frozen=True)
class Outcome:
    names: RoleNames
    created: tuple[str, ...]


async def apply(conn: asyncpg.Connection, prefix: str = "switchd",
                passwords: dict[str, str] | None = None) -> Outcome:
    """Create the roles that are missing, hand every object to the owner, grant exactly.

    Idempotent; run again after every ``db upgrade``. ``passwords`` maps a kind (owner, daemon,
    portal, report) to the password to set; roles without one keep theirs.
    """
    names = RoleNames.of(prefix)
    passwords = passwords or {}
    unknown = sorted(set(passwords) - set(KINDS))
    if unknown:
        raise RolesError(f"password for unknown role kind {', '.join(unknown)}; kinds are {', '.join(KINDS)}")
    if not await conn.fetchval("SELECT to_regclass('public.switchd_schema_migrations') IS NOT NULL"):
        raise RolesError("the database has no schema yet: run 'switchd db upgrade' first")
    created: list[str] = []
    async with conn.transaction():
        for kind in KINDS:
            name = getattr(names, kind)
            if await _ensure_role(conn, name, passwords.get(kind)):
                created.append(name)
        await _hand_to_owner(conn, names.owner)
        await _grant(conn, names)
    return Outcome(names, tuple(created))
