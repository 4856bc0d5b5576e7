"""``switchd db upgrade|status``: the database schema."""

from __future__ import annotations

from typing import Any

import click

from cli.exits import refuse
from cli.invocation import with_db
from cli.options import JSON
from cli.output import emit, table
from ledger import migrate, roles
from ledger.loyalty import card_numbers


@click.group("db")
def db() -> None:
    """Database schema and roles: upgrade, status, roles."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every missing migration, then every new or changed SQL function file (idempotent;
    safe to run from several hosts)."""

    async def body(conn: Any) -> tuple[list[migrate.Migration | migrate.FunctionFile], int, int]:
        done = await migrate.upgrade(conn)
        # Card numbers written before they were sealed are sealed now, given the master key
        # (the keys are made here too, by the owner, so the runtime roles need only read them).
        if card_numbers.has_master_key():
            await card_numbers.vault(conn)
            return done, await card_numbers.seal_clear_numbers(conn), 0
        return done, 0, await card_numbers.clear_numbers_left(conn)

    done, sealed, clear = with_db(ctx, body)
    for m in done:
        click.echo(f"applied {m.label}")
    if sealed:
        click.echo(f"sealed {sealed} card number(s) stored in clear")
    if not done and not sealed:
        click.echo("schema is up to date")
    if clear:
        refuse(f"{clear} card number(s) are still stored in clear, and no master key is configured: "
               "set [security] master_key_file or SWITCHD_MASTER_KEY and run db upgrade again")


@db.command("status")
@JSON
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """List migrations and SQL function files, and whether each is applied."""

    async def body(conn: Any) -> tuple[list[migrate.MigrationStatus], list[migrate.FunctionStatus]]:
        return await migrate.status(conn), await migrate.function_status(conn)

    statuses, functions = with_db(ctx, body)
    rows = [{**s.__dict__, "version": f"{s.version:04d}",
             "state": "MODIFIED" if s.modified else ("applied" if s.applied else "pending")} for s in statuses]
    rows += [{"version": "func", "name": f.name, "applied_at": f.applied_at,
              "state": f.state.upper() if f.state in ("changed", "unknown") else f.state} for f in functions]
    emit([s.__dict__ for s in statuses]
         + [{"function": f.name, "state": f.state, "applied_at": f.applied_at} for f in functions],
         as_json, lambda: table(rows, ["version", "state", "name", "applied_at"]))


@db.command("roles")
@click.option("--prefix", default="switchd", show_default=True,
              help="Role names: PREFIX_owner, PREFIX_daemon, PREFIX_portal, PREFIX_report.")
@click.option("--password-file", "password_files", multiple=True, metavar="KIND=FILE",
              help="Set the password of a role (owner, daemon, portal or report) from the first line of FILE; "
                   "repeatable. Roles without one keep theirs (none: trust or peer authentication).")
@click.pass_context
def db_roles(ctx: click.Context, prefix: str, password_files: tuple[str, ...]) -> None:
    """Create the owner and the least-privilege login roles, hand the schemas to the owner and
    grant each role exactly what it needs (idempotent; run it again after every `db upgrade`)."""
    passwords = {kind: secret for kind, secret in (_password(spec) for spec in password_files)}

    async def body(conn: Any) -> roles.Outcome:
        return await roles.apply(conn, prefix, passwords)

    outcome = with_db(ctx, body)
    for name in (outcome.names.owner, *outcome.names.runtime()):
        click.echo(f"{'created' if name in outcome.created else 'kept'} role {name}")
    click.echo("grants applied")


def _password(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition("=")
    if not sep or kind not in roles.KINDS:
        raise roles.RolesError(f"--password-file {spec!r}: say KIND=FILE, KIND one of {', '.join(roles.KINDS)}")
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read(roles.PASSWORD_LENGTH_MAX + 1).splitlines()[0] if path else ""
    except (OSError, IndexError) as exc:
        raise roles.RolesError(f"--password-file {kind}: cannot read a password from {path}: {exc}") from None
    if not secret:
        raise roles.RolesError(f"--password-file {kind}: {path} is empty")
    return kind, secret
