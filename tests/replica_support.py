"""A primary and a synchronous streaming standby made with pg_basebackup, in a temporary directory.

Only PostgreSQL's own binaries (initdb, pg_ctl, pg_basebackup): no failover manager. The test
kills the primary and promotes the standby itself, as a failover manager would. Run as the
``postgres`` user when the tests run as root (PostgreSQL refuses root). Ports are free ones
picked at run time; ``stop`` ends every server it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ledger.embedded import RunAs, find_pg_bin
from tools import harness

STANDBY_NAME = "standby"
TIMEOUT_S = 60


class ReplicaPair:
    """Two clusters on 127.0.0.1: ``primary`` first, ``standby`` streaming from it, synchronously."""

    def __init__(self, root: Path) -> None:
        bindir = find_pg_bin()
        assert bindir is not None, "no PostgreSQL server binaries"
        self.bindir = bindir
        self.root = root
        self.user = RunAs.of("postgres") if os.geteuid() == 0 else None
        self.ports = {"primary": harness.free_port(), "standby": harness.free_port()}
        self.dirs = {name: root / name for name in self.ports}
        self.started: list[str] = []

    @property
    def dsn(self) -> str:
        """Both hosts; asyncpg connects to the one that accepts writes."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports.values())
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def node_dsn(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[name]}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kw = {} if self.user is None else {"user": self.user.uid, "group": self.user.gid,
                                            "extra_groups": list(self.user.groups)}
        res = subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT_S, check=False, **kw)
        if res.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(res.stderr or res.stdout).strip()[-300:]}")
        return res

    def _pg(self, tool: str) -> str:
        return str(self.bindir / tool)

    def _start(self, name: str) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.ports[name]} -c unix_socket_directories='{self.root}' "
                "-c wal_level=replica -c max_wal_senders=4 -c hot_standby=on -c fsync=off")
        self._run(self._pg("pg_ctl"), "-D", str(self.dirs[name]), "-l", str(self.root / f"{name}.log"),
                  "-w", "-t", str(TIMEOUT_S), "-o", opts, "start")
        self.started.append(name)

    def start(self) -> None:
        """initdb and start the primary, copy it with pg_basebackup, start the standby."""
        os.chmod(self.root, 0o755)
        if self.user is not None:
            os.chown(self.root, self.user.uid, self.user.gid)
        self._run(self._pg("initdb"), "-D", str(self.dirs["primary"]), "-U", "postgres", "--auth=trust",
                  "--no-instructions")
        # In the file, not on the command line: a promotion must be able to change it (ALTER SYSTEM).
        with open(self.dirs["primary"] / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"synchronous_standby_names = '{STANDBY_NAME}'\nsynchronous_commit = on\n")
        self._start("primary")
        conninfo = f"host=127.0.0.1 port={self.ports['primary']} user=postgres application_name={STANDBY_NAME}"
        self._run(self._pg("pg_basebackup"), "-d", conninfo, "-D", str(self.dirs["standby"]), "-R",
                  "-X", "stream", "-c", "fast")
        self._start("standby")

    def postmaster_pid(self, name: str) -> int:
        return int((self.dirs[name] / "postmaster.pid").read_text().split()[0])

    def kill(self, name: str) -> None:
        """kill -9 of the postmaster; its backends end as soon as they notice."""
        os.kill(self.postmaster_pid(name), signal.SIGKILL)
        self.started.remove(name)

    def promote(self, name: str = "standby") -> None:
        """Promote ``name``, and let it commit without a synchronous standby (it has none now),
        as a failover manager does (pg_auto_failover's wait_primary)."""
        self._run(self._pg("pg_ctl"), "-D", str(self.dirs[name]), "-w", "promote")
        self._run(self._pg("psql"), "-h", "127.0.0.1", "-p", str(self.ports[name]), "-U", "postgres",
                  "-d", "postgres", "-c", "ALTER SYSTEM SET synchronous_standby_names = ''",
                  "-c", "SELECT pg_reload_conf()")

    def stop(self) -> None:
        """Stop every server still running (immediate: nothing here is worth a checkpoint)."""
        for name in list(self.started):
            subprocess.run([self._pg("pg_ctl"), "-D", str(self.dirs[name]), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=TIMEOUT_S, check=False,
                           **({} if self.user is None else {"user": self.user.uid, "group": self.user.gid}))
            self.started.remove(name)
        # Backends of a killed postmaster exit on their own; the orphans of the standby too.
