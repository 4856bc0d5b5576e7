"""``switchd keys new|rewrap|init``: the master key; re-seal every key at rest under a new one (ledger.sealed).

The rotation, without stopping anything (docs/operating.md, Rotating the master key):

1. write the new key to a file (``switchd keys new > F``, mode 0600);
2. move the old key to the file ``[security] master_key_previous_file`` names, the new one to
   ``master_key_file``, and ``systemctl reload switchd`` (SIGHUP): the daemons seal with the new
   key and open keys sealed under either; the portal restarts to read them;
3. ``switchd keys rewrap --new-key-file F``: each sealed row is re-sealed once; interrupted, the
   command is run again and carries on where it stopped;
4. delete the previous key's file and reload again.

No key is printed: only check values (the first 3 bytes of the key's CMAC of a zero block).
"""

from __future__ import annotations

import os
from typing import Any

import click

from cli.invocation import config, master_key, previous_master_keys, with_db
from ledger import keys, sealed
from switch import runtime


@click.group("keys")
def keys_group() -> None:
    """The master key that seals every key at rest: a new one, and re-sealing under it."""


@keys_group.command("new")
def keys_new() -> None:
    """Print a new random master key (64 hex characters) to redirect into a file of mode 0600."""
    click.echo(keys.generate_master_key_hex())


def master_kcv(key: bytes) -> str:
    """A master key's check value: AES-CMAC of a zero block under it, first 3 bytes."""
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers.algorithms import AES

    mac = cmac.CMAC(AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:keys.KCV_BYTES].hex().upper()


@keys_group.command("rewrap")
@click.option("--new-key-file", required=True, type=click.Path(dir_okay=False),
              help="File holding the new master key (64 hex characters).")
@click.pass_context
def keys_rewrap(ctx: click.Context, new_key_file: str) -> None:
    """Re-seal every sealed key under the new master key; resumable, each row re-sealed once.

    Keys open under the configured master key, the previous one (master_key_previous_file) or
    already the new one (a run that was interrupted).
    """
    new_key = keys.load_master_key(new_key_file, "")
    assert new_key is not None
    current = master_key(ctx)
    old_keys = tuple(k for k in ((() if current is None else (current,)) + previous_master_keys(ctx))
                     if k != new_key)
    # No old key at all (the configured key is the new one, no previous file): a run that checks
    # every row is already under the new key; a row that is not stops it with one line.

    def progress(count: sealed.RewrapCount) -> None:
        click.echo(f"{count.name}: {count.resealed} re-sealed, {count.already} already under the new key",
                   err=True)

    async def body(conn: Any) -> list[sealed.RewrapCount]:
        return await sealed.rewrap(conn, old_keys, new_key, progress)

    counts = with_db(ctx, body)
    for count in counts:
        click.echo(f"{count.name}: {count.resealed} re-sealed, {count.already} already under the new key")
    click.echo(f"done: every sealed key opens under the new master key (check value {master_kcv(new_key)})")


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
