"""The portal as a child of ``switchd serve``: started, watched, restarted, stopped.

The switch never imports the portal: it runs the command line its caller gives
(``switchd portal``) in a session of its own, so that Ctrl-C reaches the daemon
alone and the daemon passes SIGTERM on. A child that exits while the daemon
serves is started again after a pause that doubles up to RESTART_PAUSE_MAX_S:
card acceptance does not stop because the web portal failed. A child that
exits 2 is not: its configuration is wrong, and a restart would not mend it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from switch.logs import get_logger

log = get_logger("switchd.portal")

RESTART_PAUSE_MIN_S = 1.0
RESTART_PAUSE_MAX_S = 30.0
# A child that served this long before it exited is restarted after the shortest pause again.
RESTART_RESET_AFTER_S = 60.0
EXIT_USAGE = 2
ENV_PARENT_PID = "SWITCHD_PORTAL_PARENT_PID"  # cli.portal reads it: the child dies with its parent
# Only the daemon speaks to systemd.
_ENV_DROPPED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


class PortalChild:
    """One portal process under the daemon: ``poll()`` it regularly, ``stop()`` then ``wait()`` at the end."""

    def __init__(self, argv: Sequence[str], dsn: str, url: str, env: Mapping[str, str] | None = None) -> None:
        base = dict(os.environ if env is None else env)
        for name in _ENV_DROPPED:
            base.pop(name, None)
        # The child uses the daemon's database (an embedded cluster's too) and dies with the daemon.
        self.env = {**base, "SWITCHD_DSN": dsn, ENV_PARENT_PID: str(os.getpid())}
        self.argv = list(argv)
        self.url = url
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.given_up = False
        self.restarts = 0
        self._pause_s = RESTART_PAUSE_MIN_S
        self._restart_at: float | None = None
        self._restarting = False  # restart(): the exit it asked for is no failure
        self._started_at = 0.0

    def start(self) -> None:
        """Start the child (the daemon carries on if it cannot: the failure is logged)."""
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("portal_failed", reason=f"cannot start {self.argv[0]}: {exc.strerror}")
            self.proc = None
            self._schedule_restart()
            return
        self._started_at = time.monotonic()
        log.info("portal_started", pid=self.proc.pid, url=self.url)

    @property
    def pid(self) -> int | None:
        """The running child's process id, or None."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def poll(self) -> None:
        """Notice an exit (restart it, after the pause, unless stopping or its configuration is wrong)."""
        if self.proc is not None and self.proc.returncode is None:
            code = self.proc.poll()
            if code is not None:
                self._exited(code)
        if self._restart_at is not None and not self.stopping and time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self.start()

    def reaped(self, pid: int, status: int) -> bool:
        """A ``waitpid(-1)`` elsewhere collected ``pid``: True (and handled) when it was the portal."""
        if self.proc is None or pid != self.proc.pid or self.proc.returncode is not None:
            return False
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        self._exited(code)
        return True

    def restart(self) -> None:
        """Stop the child and start it again at once (to read the master key files again)."""
        if self.pid is not None and not self.stopping:
            assert self.proc is not None
            self._restarting = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def _exited(self, code: int) -> None:
        if self._restarting and not self.stopping:
            self._restarting = False
            log.info("portal_restarting", exit_code=code)
            self._restart_at = time.monotonic()
            return
        if self.stopping:
            log.info("portal_stopped", exit_code=code)
            return
        if code == EXIT_USAGE:
            self.given_up = True
            log.error("portal_failed", exit_code=code, reason="its configuration is wrong (the line above says "
                      "why); the switch serves on without it")
            return
        if time.monotonic() - self._started_at >= RESTART_RESET_AFTER_S:
            self._pause_s = RESTART_PAUSE_MIN_S
        log.error("portal_exited", exit_code=code, restart_in_s=self._pause_s)
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        self._restart_at = time.monotonic() + self._pause_s
        self._pause_s = min(self._pause_s * 2, RESTART_PAUSE_MAX_S)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask the child to stop (no restart after this); SIGTERM is sent once, a second one would cut
        its drain short."""
        again = self.stopping and sig == signal.SIGTERM
        self.stopping = True
        self._restart_at = None
        if self.pid is not None and not again:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> None:
        """After ``stop()``: wait for the child to drain, at most ``timeout_s``; then kill it."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("portal_killed", pid=self.proc.pid)
            self.proc.kill()
            code = self.proc.wait()
        log.info("portal_stopped", exit_code=code)
