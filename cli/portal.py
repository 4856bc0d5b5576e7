"""``switchd portal``: the web portal alone (``switchd serve`` runs it too, as a child process).

The configuration's ``[portal]`` section becomes the portal's PortalSettings
here: portal/ never reads the switch's configuration. The secret that keys
session ids and form tokens comes from ``$SWITCHD_PORTAL_SECRET``, else
``[portal] secret_file``, else ``<state_dir>/portal-secret``, generated (mode
0600) when it is missing; never from the database or the example file.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import secrets
import signal
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from cli.exits import CommandFailed, Exit, refuse
from cli.invocation import config
from ledger import db as ledger_db
from ledger.errors import first_line
from ledger.keys import KeyStoreError
from portal.settings import SECRET_ENV, ApiSettings, PortalSettings, SettingsError, load_secret
from switch import keystore, runtime
from switch.config import Config
from switch.daemon import ledger_settings
from switch.logs import configure as configure_logs
from switch.logs import get_logger
from switch.portal_child import ENV_PARENT_PID

GENERATED_SECRET_FILE = "portal-secret"
GENERATED_SECRET_BYTES = 48  # 64 characters of base64: past PortalSettings' minimum
PR_SET_PDEATHSIG = 1

log = get_logger("switchd.portal")


def portal_settings(cfg: Config, secret: bytes) -> PortalSettings:
    """The portal's settings from the ``[portal]`` section; page sizes and the like keep their defaults."""
    p = cfg.portal
    return PortalSettings(
        host=p.host, port=p.port, public_base_url=p.url, session_idle_s=p.session_idle_s,
        session_absolute_s=p.session_absolute_s, sessions_per_user_max=p.sessions_per_user_max,
        login_account_failures_max=p.login_account_failures_max,
        login_address_failures_max=p.login_address_failures_max, login_window_s=p.login_window_s,
        login_lockout_s=p.login_lockout_s, tls_cert_file=p.tls_cert_file or None,
        tls_key_file=p.tls_key_file or None, trusted_proxies=p.proxies, secret_file=p.secret_file or None,
        db_pool_size_max=p.db_pool_size_max, limit_concurrency=p.limit_concurrency,
        default_locale=p.default_locale, image_size_max_bytes=p.image_size_max_bytes, mall=cfg.mall, secret=secret,
        vouchers=cfg.vouchers, exchange=cfg.exchange,
        promotions_need_approval=p.promotions_need_approval, promotion_fee_minor=p.promotion_fee_minor,
        smtp_host=p.smtp_host, smtp_port=p.smtp_port, smtp_from=p.smtp_from, smtp_starttls=p.smtp_starttls,
        smtp_username=p.smtp_username, smtp_password_file=p.smtp_password_file, smtp_timeout_s=p.smtp_timeout_s,
        smtp_attempts_max=p.smtp_attempts_max,
        api=ApiSettings(**dataclasses.asdict(cfg.api)),
        # Where `switchd eod run` writes the files the settlement pages serve.
        settlement_dir=cfg.eod.settlement_dir or str(cfg.state_path / "settlement"),
    )


def generated_secret_path(cfg: Config) -> Path:
    """Where a generated secret lives: ``<state_dir>/portal-secret``."""
    return cfg.state_path / GENERATED_SECRET_FILE


def portal_secret(cfg: Config, env: Mapping[str, str] | None = None) -> tuple[bytes, str]:
    """The secret and where it came from: ``env``, ``file`` or ``generated`` (``<state_dir>/portal-secret``).

    Neither the variable nor ``secret_file`` set: the generated file is read, or
    made (mode 0600, never printed) when missing. SettingsError when none can be had.
    """
    env = os.environ if env is None else env
    if env.get(SECRET_ENV):
        return load_secret(None, env), "env"
    if cfg.portal.secret_file:
        return load_secret(cfg.portal.secret_file, env), "file"
    path = generated_secret_path(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two processes starting at once, one writes the file and both read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("portal_secret_readable", path=str(path), mode=oct(mode), fix=f"chmod 600 {path}")
        return load_secret(str(path), {}), "generated"
    except OSError as exc:
        raise SettingsError(f"cannot write the portal secret {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(GENERATED_SECRET_BYTES) + "\n")
    log.warning("portal_secret_generated", path=str(path),
                why=f"neither {SECRET_ENV} nor [portal] secret_file gives one",
                note="every portal serving this database needs the same secret")
    return load_secret(str(path), {}), "generated"


def _die_with_parent() -> None:
    """As ``switchd serve``'s child: end when the daemon ends, even if it is killed."""
    parent = os.environ.pop(ENV_PARENT_PID, "")
    if not parent.isdigit():
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        os._exit(1)


async def _seed_demo_users(dsn: str) -> None:
    from portal.demo import seed_users

    conn = await ledger_db.connect(dsn)
    try:
        async with conn.transaction():
            await seed_users(conn)
    finally:
        await conn.close()


@click.command("portal")
@click.option("--show-url", is_flag=True, help="Print the portal's URL (from the configuration) and exit.")
@click.option("--demo-users", is_flag=True,
              help="First create the demo users (one per role, password switchd-demo) in a database "
                   "seeded by `switchd demo seed`.")
@click.pass_context
def portal(ctx: click.Context, show_url: bool, demo_users: bool) -> None:
    """Serve the web portal alone until SIGTERM/SIGINT (`switchd serve` runs it too: [portal] enabled)."""
    _die_with_parent()
    cfg = config(ctx)
    if show_url:
        click.echo(cfg.portal.url if cfg.portal.enabled else f"{cfg.portal.url} (not started by switchd serve: "
                   "[portal] enabled = false)")
        return
    configure_logs(cfg.daemon.log_level)
    try:
        secret, _source = portal_secret(cfg)
        settings = portal_settings(cfg, secret)
        settings.check()
        # The seat posts through the ledger engine with the daemon's bounds; terminal keys are
        # sealed under the daemon's master key (none configured: keyed terminals are refused).
        master_key = runtime.master_key(cfg)
        previous = keystore.load_previous_master_key(cfg.security.master_key_previous_file)
    except SettingsError as exc:
        raise CommandFailed(f"portal: {exc}", Exit.USAGE) from None
    except KeyStoreError as exc:
        raise CommandFailed(f"portal: {exc}", Exit.USAGE) from None
    from portal.server import ListenError, serve  # after the checks: a bad setting answers fast

    async def main(dsn: str) -> None:
        if demo_users:
            await _seed_demo_users(dsn)
        await serve(settings, dsn, ledger_settings(cfg), master_key, read_dsn=cfg.database.read_dsn,
                    read_staleness_max_s=cfg.database.read_staleness_max_s,
                    previous_master_keys=() if previous is None else (previous,))

    try:
        with contextlib.nullcontext(cfg.portal.dsn) if cfg.portal.dsn else runtime.database_dsn(cfg) as dsn:
            runtime.run(lambda: main(dsn))
    except ListenError as exc:
        refuse(str(exc))
    except OSError as exc:
        refuse(f"database unreachable: {exc}")
    except Exception as exc:  # asyncpg's errors: one line, never a traceback
        import asyncpg

        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            refuse(f"database error: {first_line(exc)}")
        raise


def portal_argv(executable: str, obj: Mapping[str, Any]) -> list[str]:
    """The command line of ``switchd portal`` with this invocation's ``--config`` and ``--set``."""
    argv = [executable, "-m", "cli.main"]
    if obj.get("config_path"):
        argv += ["--config", str(obj["config_path"])]
    for text in obj.get("overrides", ()):
        argv += ["--set", text]
    return [*argv, "portal"]
