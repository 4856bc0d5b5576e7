"""``switchd serve``: the daemon in the foreground."""

from __future__ import annotations

import sys

import click

from cli.invocation import config
from switch.daemon import serve as serve_daemon


@click.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT (exits with the daemon's status)."""
    sys.exit(serve_daemon(config(ctx)))
