"""systemd's notify protocol, spoken directly: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once listening, ``STOPPING=1`` when draining, ``WATCHDOG=1``
every half of ``$WATCHDOG_USEC``. Without ``$NOTIFY_SOCKET`` (not under
systemd) every call is a no-op. Failures never stop the daemon: a lost
notification is logged, not fatal.

>>> notify("READY=1", env={})
False
>>> watchdog_interval_s({"WATCHDOG_USEC": "4000000"}), watchdog_interval_s({})
(2.0, None)
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

from switch.logs import get_logger

log = get_logger("switchd.notify")


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    # '@' names a socket in the abstract namespace (leading NUL byte).
    return "\0" + path[1:] if path.startswith("@") else path


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one state string; True when it was sent."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("notify_failed", state=state.split("=")[0], error=str(exc))
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the watchdog timeout), or None when not asked."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):  # the watchdog is meant for another process
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog(interval_s: float) -> None:
    """Ping systemd's watchdog forever (cancel to stop). Pings only while the loop runs: that is the point."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
