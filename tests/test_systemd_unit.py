"""systemd/switchd.service and systemd/switchd-portal.service carry their hardening (static checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
UNIT = UNITS / "switchd.service"
PORTAL_UNIT = UNITS / "switchd-portal.service"
HARDENED = {"PrivateMounts": "yes", "ProtectProc": "invisible", "RemoveIPC": "yes", "PrivateTmp": "yes",
            "ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateDevices": "yes",
            "RestrictSUIDSGID": "yes", "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
            "SystemCallArchitectures": "native"}


def service_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section's settings, each key's values in order (comments left out)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", [UNIT, PORTAL_UNIT], ids=lambda p: p.name)
def test_unit_is_hardened(unit: Path) -> None:
    settings = service_settings(unit)
    for key, value in HARDENED.items():
        assert settings.get(key) == [value], f"{unit.name}: {key}={value} expected, found {settings.get(key)}"
    assert settings["User"] == ["switchd"] and settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_unit_leaves_proc_stat_visible_for_process_metrics() -> None:
    # ProcSubset=pid hides /proc/stat; prometheus_client then exports no process_* metric at all.
    assert "pid" not in service_settings().get("ProcSubset", [])


def test_portal_unit_serves_the_portal_with_its_secret_as_a_credential() -> None:
    settings = service_settings(PORTAL_UNIT)
    (exec_start,) = settings["ExecStart"]
    assert exec_start.split()[-1] == "portal" and "--config /etc/switchd/switchd.toml" in exec_start
    # The secret: a systemd credential, readable by the service alone; never in the unit or the environment.
    assert settings["LoadCredential"] == ["portal-secret:/etc/switchd/portal.secret"]
    assert "portal.secret_file=${CREDENTIALS_DIRECTORY}/portal-secret" in exec_start
    assert not any("SWITCHD_PORTAL_SECRET" in v for values in settings.values() for v in values)
    # It writes nothing on disk: no state directory, no writable path.
    assert "ReadWritePaths" not in settings and "StateDirectory" not in settings
    assert settings["UMask"] == ["0077"]
