"""``switchd serve`` with ``[portal] enabled``: the portal comes up as a child, is restarted when it
dies, and stops with the daemon (exit 0, nothing left running)."""

from __future__ import annotations

import os
import signal
import stat
import time
import urllib.request
from pathlib import Path

from fixtures_daemon import POS_LISTENER, Daemon

PORTAL = {"enabled": True, "port": 0}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _login_page(url: str) -> str:
    with urllib.request.urlopen(f"{url}/login", timeout=10) as response:  # noqa: S310 - a local test URL
        assert response.status == 200
        return str(response.read().decode())


def test_serve_runs_restarts_and_stops_the_portal(daemon_db: str, tmp_path: Path) -> None:
    d = Daemon(tmp_path, daemon_db, [POS_LISTENER], extra={"portal": PORTAL}).start()
    try:
        ready = d.wait_event("portal_ready", timeout_s=30)
        assert ready["url"].startswith("http://127.0.0.1:")
        assert "<form" in _login_page(ready["url"])
        secret_path = tmp_path / "state" / "portal-secret"
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        assert secret_path.read_text().strip() not in d.log_text()  # generated, said so, never printed
        assert d.events("portal_secret_generated")

        os.kill(ready["pid"], signal.SIGKILL)  # the portal dies: the switch serves on, the portal comes back
        again = d.wait_event("portal_ready", lambda e: e["pid"] != ready["pid"], timeout_s=30)
        assert d.events("portal_exited") and d.running
        assert "<form" in _login_page(again["url"])
    finally:
        code = d.stop()
    assert code == 0, d.log_tail()
    deadline = time.monotonic() + 5
    while _alive(again["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(again["pid"])
    assert d.events("portal_stopped")


def test_a_misconfigured_portal_leaves_the_switch_serving(daemon_db: str, tmp_path: Path) -> None:
    d = Daemon(tmp_path, daemon_db, [POS_LISTENER], env={"SWITCHD_PORTAL_SECRET": "short"},
               extra={"portal": PORTAL}).start()
    try:
        failed = d.wait_event("portal_failed", timeout_s=30)
        assert failed["exit_code"] == 2
        assert "portal secret must be at least 32 bytes" in d.log_text()
        assert d.running and not d.events("portal_ready")
    finally:
        assert d.stop() == 0, d.log_tail()


def test_workers_supervise_the_portal_too(daemon_db: str, tmp_path: Path) -> None:
    d = Daemon(tmp_path, daemon_db, [POS_LISTENER], workers=2, extra={"portal": PORTAL}).start()
    try:
        ready = d.wait_event("portal_ready", timeout_s=30)
        assert "<form" in _login_page(ready["url"])
    finally:
        assert d.stop() == 0, d.log_tail()
    assert not _alive(ready["pid"])
