"""``switchd keys init``: a master key for a box that has none (a demo, a test machine)."""

from __future__ import annotations

import os

import click

from cli.invocation import config
from ledger import keys
from switch import runtime


@click.group("keys")
def keys_group() -> None:
    """The master key that seals terminal keys and card numbers."""


@keys_group.command("init")
@click.pass_context
def keys_init(ctx: click.Context) -> None:
    """Write a new random master key to <state_dir>/master.key (mode 0600) unless a master key is
    already configured or that file exists. For a demo or a test box only: in production the key
    lives off the database's host ([security] master_key_file, or SWITCHD_MASTER_KEY)."""
    cfg = config(ctx)
    path = cfg.state_path / runtime.MASTER_KEY_FILE_NAME
    if runtime.master_key(cfg) is not None:
        click.echo(f"a master key is configured{' (' + str(path) + ')' if path.is_file() else ''}: kept")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two runs at once must not write two different keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(keys.generate_master_key_hex() + "\n")
    click.echo(f"wrote a new master key to {path} (keep a copy: without it no card number or terminal "
               "key can be read back)")
