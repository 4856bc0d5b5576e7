"""How a ``switchd`` command ends: one exit-code rule, applied here and nowhere else.

=====  =========  ==============================================================
code   name       meaning
=====  =========  ==============================================================
0      OK         done
1      REFUSED    the command ran and the answer is no: a check failed (recon,
                  end of day), the input was refused (a duplicate, a bad value,
                  an overlap), the database failed or could not be reached
2      USAGE      the command line or the configuration is wrong: click's own
                  usage errors, a ``--config`` file or ``--set`` that does not
                  validate
3      BUSY       another run holds the lock (end of day): try again later
4      NOT_FOUND  the object the command acts on (a program, merchant, card,
                  terminal, BIN, transaction) does not exist
=====  =========  ==============================================================

Every failure is one line on stderr, ``switchd: <message>``, never a traceback.
Commands raise :class:`CommandFailed` (through :func:`refuse`, :func:`not_found`)
or let a domain error through; :class:`RootGroup` turns either into its code.
``switchd serve`` exits with the daemon's own status.

>>> int(Exit.NOT_FOUND), exit_code(EodBusy("held"))
(4, <Exit.BUSY: 3>)
"""

from __future__ import annotations

import enum
from typing import Any, NoReturn

import click

from ledger.clearing import ClearingError
from ledger.embedded import EmbeddedError
from ledger.eod import EodBusy
from ledger.errors import SwitchdError, first_line
from ledger.loyalty.bins import BinNotFound
from ledger.loyalty.card_numbers import CardVaultError
from ledger.loyalty.pins import PinError
from ledger.loyalty.programs import ProvisioningError
from ledger.loyalty.rates import RateError
from ledger.loyalty.vouchers import VoucherError
from ledger.migrate import MigrationError
from ledger.revenue import RevenueError
from ledger.roles import RolesError
from switch.config import ConfigError
from switch.keystore import KeyStoreError
from switch.terminals import TerminalError


class Exit(enum.IntEnum):
    """The exit codes of every ``switchd`` command (see the module docstring)."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    BUSY = 3
    NOT_FOUND = 4


class CommandFailed(SwitchdError):
    """A command's one-line failure and the code it exits with."""

    def __init__(self, message: str, code: Exit = Exit.REFUSED) -> None:
        super().__init__(message)
        self.code = code


def refuse(message: str) -> NoReturn:
    """End the command: refused or failed (exit 1)."""
    raise CommandFailed(message, Exit.REFUSED)


def not_found(message: str) -> NoReturn:
    """End the command: what it acts on does not exist (exit 4)."""
    raise CommandFailed(message, Exit.NOT_FOUND)


# The project's own errors a command may let through, and what each means for the exit code.
_DOMAIN_CODES: tuple[tuple[type[Exception], Exit], ...] = (
    (ConfigError, Exit.USAGE),
    (EodBusy, Exit.BUSY),
    (BinNotFound, Exit.NOT_FOUND),  # before ProvisioningError, its base
    (ProvisioningError, Exit.REFUSED),
    (TerminalError, Exit.REFUSED),
    (KeyStoreError, Exit.REFUSED),
    (CardVaultError, Exit.REFUSED),
    (PinError, Exit.REFUSED),
    (ClearingError, Exit.REFUSED),
    (RateError, Exit.REFUSED),
    (EmbeddedError, Exit.REFUSED),
    (MigrationError, Exit.REFUSED),
    (RolesError, Exit.REFUSED),
    (VoucherError, Exit.REFUSED),
    (RevenueError, Exit.USAGE),
)


def exit_code(exc: BaseException) -> Exit | None:
    """The code ``exc`` ends a command with, or None when it is not ours to explain (a bug)."""
    if isinstance(exc, CommandFailed):
        return exc.code
    for kind, code in _DOMAIN_CODES:
        if isinstance(exc, kind):
            return code
    return None


class RootGroup(click.Group):
    """The root group: whatever a command raises that has a code ends it in one line with that code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            code = exit_code(exc)
            if code is None:
                raise
            click.echo(f"switchd: {first_line(exc)}", err=True)
            ctx.exit(int(code))
