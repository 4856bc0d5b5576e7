"""The ``switchd`` root group, its global options, and the one place every command is registered.

Exit codes follow :mod:`cli.exits`: 0 ok, 1 refused or failed, 2 usage, 3 busy, 4 not found.
"""

from __future__ import annotations

import click

from cli import (
    batch,
    bins,
    card,
    db,
    demo,
    eod,
    exchange,
    keys,
    ledger,
    mall,
    member,
    merchant,
    portal,
    program,
    recon,
    report,
    serve,
    stats,
    terminal,
    txn,
    user,
    voucher,
)
from cli.exits import RootGroup

# The root group's help; \b keeps click from re-wrapping the table.
HELP = """switchd: ISO 8583 acquiring switch and points/stored-value ledger.

Every command reads --config FILE (else $SWITCHD_CONFIG, else built-in defaults),
then the environment, then each --set SECTION.KEY=VALUE (listeners:
--set listeners.NAME.KEY=VALUE). Failures are one line on stderr.

\b
Exit codes:
  0  done
  1  refused or failed (a check failed, input refused, database error)
  2  usage: bad command line or configuration
  3  busy: another run holds the lock (end of day)
  4  not found: what the command acts on does not exist
"""


@click.group(cls=RootGroup, help=HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration file (default: $SWITCHD_CONFIG, else built-in defaults).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one configuration key (repeatable; listeners.NAME.KEY=VALUE for a listener).")
@click.version_option(package_name="switchd", prog_name="switchd", message="%(prog)s %(version)s")
@click.pass_context
def root(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    obj = ctx.ensure_object(dict)
    obj["config_path"] = config_path
    obj["overrides"] = overrides


COMMANDS: tuple[click.Command, ...] = (
    serve.serve,
    db.db,
    program.program,
    merchant.merchant,
    card.card,
    member.member,
    bins.bin_group,
    terminal.terminal,
    demo.demo,
    eod.eod,
    keys.keys_group,
    batch.batch,
    stats.stats,
    txn.txn,
    ledger.ledger,
    mall.mall,
    recon.recon,
    portal.portal,
    user.user,
    voucher.voucher,
    report.report,
    exchange.rate,
    exchange.exchange,
)
for _command in COMMANDS:
    root.add_command(_command)


def main() -> None:
    """The console script ``switchd``."""
    root(obj={}, prog_name="switchd")


if __name__ == "__main__":  # python -m cli.main: how `switchd serve` starts its portal child
    main()
