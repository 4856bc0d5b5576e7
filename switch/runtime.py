"""Where the daemon and the CLI meet the database: DSN resolution, embedded cluster, event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from ledger.embedded import EmbeddedPostgres
from switch.config import Config
from switch.logs import get_logger

T = TypeVar("T")
log = get_logger("switchd.runtime")


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
