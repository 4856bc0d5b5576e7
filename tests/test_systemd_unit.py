"""systemd/switchd.service carries its hardening (a static check of the unit file)."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "switchd.service"


def service_settings() -> dict[str, list[str]]:
    """The [Service] section's settings, each key's values in order (comments left out)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
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


def test_unit_is_hardened() -> None:
    settings = service_settings()
    for key, value in {"PrivateMounts": "yes", "ProtectProc": "invisible", "RemoveIPC": "yes",
                       "PrivateTmp": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes"}.items():
        assert settings.get(key) == [value], f"{key}={value} expected, found {settings.get(key)}"


def test_unit_leaves_proc_stat_visible_for_process_metrics() -> None:
    # ProcSubset=pid hides /proc/stat; prometheus_client then exports no process_* metric at all.
    assert "pid" not in service_settings().get("ProcSubset", [])
