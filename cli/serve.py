"""``switchd serve``: the daemon in the foreground, and the portal as its child when ``[portal] enabled``."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.invocation import config
from cli.portal import portal_argv
from switch.daemon import serve as serve_daemon


@click.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT (exits with the daemon's status); with
    [portal] enabled it runs `switchd portal` as a supervised child process."""
    cfg = config(ctx)
    obj: dict[str, Any] = ctx.ensure_object(dict)
    argv = portal_argv(sys.executable, obj) if cfg.portal.enabled else None
    sys.exit(serve_daemon(cfg, portal_argv=argv))
