"""The embedded cluster started as root: run as its unprivileged owner with that owner's own
group and groups; a state directory that owner cannot reach moves the cluster outside it, and a
home it cannot reach at all is said in one line."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedError, EmbeddedPostgres, RunAs, find_pg_bin, first_unreachable

pytestmark = [
    pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL server binaries on this machine"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the cluster changes owner only when started as root"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def checkout() -> Iterator[Path]:
    """Like a checkout under `mktemp -d`: a 0700 directory of root's."""
    d = Path(tempfile.mkdtemp(prefix="swk", dir="/tmp"))
    assert (d.stat().st_mode & 0o777) == 0o700
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_commands_run_with_the_owners_group_and_groups(checkout: Path) -> None:
    emb = EmbeddedPostgres(checkout / "var", port=_free_port())
    user = emb._run_as()
    assert user is not None
    ids = [int(emb._cmd(["id", flag], user).stdout) for flag in ("-u", "-g")]
    groups = {int(g) for g in emb._cmd(["id", "-G"], user).stdout.split()}
    assert ids == [user.uid, user.gid]
    assert groups == set(os.getgrouplist(user.name, user.gid)) and 0 not in groups


def test_a_checkout_the_owner_cannot_reach_gets_its_cluster_outside(checkout: Path, tmp_path: Path) -> None:
    # `make run` as root in a checkout under `mktemp -d`: the cluster goes under the relocated
    # root, the same one for the same state directory, and nothing in the checkout is opened.
    outside = Path(tempfile.mkdtemp(prefix="swk-reloc-", dir="/var/tmp"))
    os.chmod(outside, 0o711)  # as /var/tmp itself is to the owner
    try:
        emb = EmbeddedPostgres(checkout / "var", port=_free_port(), relocated_root=outside / "embedded")
        try:
            dsn = emb.start()
            assert emb.relocated_to is not None and str(outside) in dsn
            assert (emb.data_dir / "PG_VERSION").exists()
            assert (checkout.stat().st_mode & 0o777) == 0o700
        finally:
            emb.stop()
        again = EmbeddedPostgres(checkout / "var", port=_free_port(), relocated_root=outside / "embedded")
        again.locate(again._run_as())
        assert again.data_dir == emb.data_dir
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_a_cluster_home_nobody_can_reach_is_one_clear_line(checkout: Path) -> None:
    # Even the relocated root closed (it lies inside the 0700 checkout): one line saying what to do.
    emb = EmbeddedPostgres(checkout / "var", port=_free_port(), relocated_root=checkout / "elsewhere")
    try:
        with pytest.raises(EmbeddedError) as info:
            emb.start()
    finally:
        emb.stop()
    message = str(info.value)
    assert "\n" not in message
    assert f"({checkout} is closed to it)" in message, message
    assert f"chmod o+x {checkout}" in message and "SWITCHD_STATE_DIR" in message and "SWITCHD_DSN" in message
    assert "initdb failed" not in message


def test_a_directory_open_to_the_owners_group_only_is_enough(checkout: Path) -> None:
    # Group-owned by the owner's own group, closed to others: reachable only with that group,
    # never with root's (which a uid-only switch kept).
    user = RunAs.of("postgres") if _has("postgres") else RunAs.of("nobody")
    os.chown(checkout, 0, user.gid)
    os.chmod(checkout, 0o750)
    assert first_unreachable(checkout, user) is None
    emb = EmbeddedPostgres(checkout / "var", port=_free_port())
    try:
        dsn = emb.start()
        assert str(checkout) in dsn
        assert (checkout / "var" / "pg" / "data" / "PG_VERSION").exists()
    finally:
        emb.stop()


def test_first_unreachable_names_the_closed_directory(checkout: Path) -> None:
    user = RunAs("someone", 54321, 54321, (54321,))
    assert first_unreachable(checkout / "var" / "pg", user) == checkout
    os.chmod(checkout, 0o711)
    assert first_unreachable(checkout, user) is None
    os.chown(checkout, 0, grp.getgrgid(0).gr_gid)
    os.chmod(checkout, 0o710)
    assert first_unreachable(checkout, RunAs("rootgroup", 54321, 0, (0,))) is None


def _has(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
