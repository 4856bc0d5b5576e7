"""Where the daemon and the CLI meet the database: DSN resolution, embedded cluster, event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from ledger import keys
from ledger.embedded import EmbeddedPostgres
from switch.config import Config
from switch.logs import get_logger

T = TypeVar("T")
log = get_logger("switchd.runtime")
# Where `switchd keys init` puts a master key when none is configured (a demo's or a test
# box's convenience: production keeps the key off the database's host, docs/operating.md).
MASTER_KEY_FILE_NAME = "master.key"


def master_key(cfg: Config) -> bytes | None:
    """The master key: ``[security] master_key_file``, else the environment variable
    ``master_key_env`` names, else ``<state_dir>/master.key`` when that file exists; None
    when there is none. KeyStoreError (one line, no key) when one is named but unreadable."""
    found = keys.load_master_key(cfg.security.master_key_file, cfg.security.master_key_env)
    fallback = cfg.state_path / MASTER_KEY_FILE_NAME
    if found is None and fallback.is_file():
        found = keys.load_master_key(str(fallback), "")
    return found


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when it is installed: the one place the loop is chosen."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps odd platforms working
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())  # type: ignore[arg-type]


@contextlib.contextmanager
def database_dsn(cfg: Config, keep_embedded_running: bool = False) -> Iterator[str]:
    """Yield the DSN to use: the configured one, else an embedded cluster started for us."""
    if cfg.database.dsn:
        yield cfg.database.dsn
        return
    emb = EmbeddedPostgres(cfg.state_path, port=cfg.database.embedded_port)
    dsn = emb.start()
    log.info("database_embedded", data_dir=str(emb.data_dir), socket_dir=str(emb.socket_dir))
    if emb.relocated_to is not None:
        log.warning("database_embedded_relocated", data_dir=str(emb.data_dir), state_dir=str(cfg.state_path),
                    reason="the cluster's owner cannot reach the state directory")
    try:
        yield dsn
    finally:
        # A cluster some other process started (a running daemon) is not ours to stop.
        if emb.started_here and not keep_embedded_running:
            emb.stop()
            log.info("database_embedded_stopped", data_dir=str(emb.data_dir))
