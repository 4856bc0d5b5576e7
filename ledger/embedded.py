"""An embedded PostgreSQL cluster for a zero-configuration start.

When no DSN is configured, the daemon runs a private cluster under the state
directory, created with the machine's own server binaries (``initdb``,
``pg_ctl``) and listening only on a unix socket inside that directory.
PostgreSQL refuses to run as root, so as root the cluster belongs to an
unprivileged system user (``postgres`` when it exists, else ``nobody``), run
with that user's own group and supplementary groups (never root's). When that
user cannot reach the state directory (a checkout under ``mktemp -d`` is a 0700
directory of root's), the cluster lives instead under
``/var/tmp/switchd-embedded/<hash of the state directory>/pg``: the same
checkout always finds the same cluster there, and nothing in the checkout has to
be opened to another user.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import SwitchdError

EMBEDDED_DB = "switchd"
EMBEDDED_SUPERUSER = "switchd"
# Where a cluster goes when its owner cannot reach the state directory (root-owned, 0711:
# each cluster's own directory below it belongs to the owner, 0700).
RELOCATED_ROOT = Path("/var/tmp/switchd-embedded")


class EmbeddedError(SwitchdError):
    """The embedded cluster cannot be brought up; ``str()`` says how to fix it."""


def find_pg_bin() -> Path | None:
    """Directory holding initdb and pg_ctl, from PATH or /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        # Debian's wrappers on PATH dispatch to the real binaries; prefer the real ones.
        real = Path(os.path.realpath(on_path)).parent
        if (real / "initdb").exists() and (real / "postgres").exists():
            return real
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for cand in candidates:
        p = Path(cand)
        if (p / "initdb").exists() and (p / "pg_ctl").exists() and (p / "postgres").exists():
            return p
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the cluster's commands run as: its uid, group and groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = field(default=())

    @classmethod
    def of(cls, name: str) -> RunAs:
        pw = pwd.getpwnam(name)
        return cls(name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)))


def first_unreachable(path: Path, who: RunAs) -> Path | None:
    """The first directory on the way to ``path`` (itself included) that ``who`` may not enter,
    by its permission bits (ACLs are not read: the verdict that counts is a try as ``who``).

    >>> first_unreachable(Path("/"), RunAs("x", 12345, 12345)) is None
    True
    """
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            return d
        if st.st_uid == who.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == who.gid or st.st_gid in who.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


@dataclass
class EmbeddedPostgres:
    """A private cluster at ``state_dir/pg``; start() returns its DSN."""

    state_dir: Path
    port: int  # [database] embedded_port
    started_here: bool = False
    relocated_root: Path = RELOCATED_ROOT
    # Set by locate() when the owner cannot reach the state directory: the cluster's home then.
    relocated_to: Path | None = None

    @property
    def cluster_dir(self) -> Path:
        return self.relocated_to or self.state_dir / "pg"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgres.log"

    def locate(self, user: RunAs | None) -> None:
        """Decide where the cluster lives: under the state directory when ``user`` (the owner,
        when run as root) can reach it, else under ``relocated_root`` (see the module's doc)."""
        self.relocated_to = None
        if user is None or self._reachable(self.state_dir / "pg", user):
            return
        key = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        self.relocated_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.relocated_root, 0o711)
        home = self.relocated_root / key
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, user.uid, user.gid)
        (home / "state_dir").write_text(f"{self.state_dir.resolve()}\n")  # whose cluster this is
        self.relocated_to = home / "pg"

    def dsn(self) -> str:
        return f"postgresql://{EMBEDDED_SUPERUSER}@/{EMBEDDED_DB}?host={self.socket_dir}&port={self.port}"

    def _run_as(self) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return RunAs.of(name)
            except KeyError:
                continue
        raise EmbeddedError("embedded PostgreSQL: running as root and no unprivileged user exists; set SWITCHD_DSN")

    def _cmd(self, args: list[str], user: RunAs | None) -> subprocess.CompletedProcess[str]:
        if user is None:
            return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        # user= alone would change only the uid: the server would keep root's group and
        # supplementary groups, and reach (or be refused) what its own account would not.
        return subprocess.run(args, user=user.uid, group=user.gid, extra_groups=list(user.groups),
                              capture_output=True, text=True, timeout=120, check=False)

    def _reachable(self, where: Path, user: RunAs) -> bool:
        # Tried as the owner: the verdict of ACLs, mounts and modes together. A directory not
        # made yet will be made (by root, for the owner): its nearest existing parent need only
        # let the owner through.
        test = 'cd -- "$1" && test -w .'
        while not where.exists():
            where, test = where.parent, 'cd -- "$1"'
        return self._cmd(["/bin/sh", "-c", test, "sh", str(where)], user).returncode == 0

    def _check_reachable(self, user: RunAs) -> None:
        """Fail in one line when ``user`` cannot enter and write the cluster's directory."""
        where = self.data_dir.parent
        if self._reachable(where, user):
            return
        blocked = first_unreachable(where, user) or where
        raise EmbeddedError(
            f"embedded PostgreSQL: user {user.name} (the cluster's owner when run as root) cannot reach "
            f"{where} ({blocked} is closed to it): let it through each directory on the way "
            f"(chmod o+x {blocked}), or set SWITCHD_STATE_DIR to a directory it can reach, or set SWITCHD_DSN"
        )

    def start(self) -> str:
        """Create the cluster if needed, start it, create the database; return the DSN."""
        bindir = find_pg_bin()
        if bindir is None:
            raise EmbeddedError(
                "embedded PostgreSQL: no server binaries (initdb, pg_ctl) found on PATH or under "
                "/usr/lib/postgresql/*/bin; install PostgreSQL or set SWITCHD_DSN"
            )
        user = self._run_as()
        self.locate(user)
        if len(str(self.socket_dir)) > 90:
            raise EmbeddedError(
                f"embedded PostgreSQL: state directory path too long for a unix socket ({self.socket_dir}); "
                "use a shorter daemon.state_dir or set SWITCHD_DSN"
            )
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            for d in (self.data_dir.parent, self.socket_dir):
                os.chown(d, user.uid, user.gid)
            if self.data_dir.exists():
                os.chown(self.data_dir, user.uid, user.gid)
            self._check_reachable(user)
        if not (self.data_dir / "PG_VERSION").exists():
            res = self._cmd(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", EMBEDDED_SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                user,
            )
            if res.returncode != 0:
                raise EmbeddedError(f"embedded PostgreSQL: initdb failed: {_last_line(res.stderr)}")
        status = self._cmd([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "status"], user)
        if status.returncode != 0:
            opts = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -p {self.port}"
            res = self._cmd(
                [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                 "-w", "-t", "60", "-o", opts, "start"],
                user,
            )
            self.started_here = res.returncode == 0
            if res.returncode != 0:
                raise EmbeddedError(
                    f"embedded PostgreSQL: pg_ctl start failed: {_last_line(res.stderr or res.stdout)} "
                    f"(see {self.log_file})"
                )
        psql = bindir / "psql"
        exists = self._cmd(
            [str(psql), "-h", str(self.socket_dir), "-p", str(self.port), "-U", EMBEDDED_SUPERUSER,
             "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{EMBEDDED_DB}'"],
            user,
        )
        if exists.stdout.strip() != "1":
            res = self._cmd(
                [str(psql), "-h", str(self.socket_dir), "-p", str(self.port), "-U", EMBEDDED_SUPERUSER,
                 "-d", "postgres", "-c", f"CREATE DATABASE {EMBEDDED_DB}"],
                user,
            )
            if res.returncode != 0:
                raise EmbeddedError(f"embedded PostgreSQL: create database failed: {_last_line(res.stderr)}")
        return self.dsn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``mode``: pg_ctl's fast, smart or immediate shutdown); a cluster
        that is not running is fine."""
        if mode not in ("fast", "smart", "immediate"):
            raise ValueError(f"shutdown mode must be fast, smart or immediate, got {mode!r}")
        bindir = find_pg_bin()
        user = self._run_as()
        if self.relocated_to is None:
            self.locate(user)
        if bindir is None or not self.data_dir.exists():
            return
        self._cmd([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"], user)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
