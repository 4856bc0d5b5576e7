"""The portal as part of the product: ``[portal]`` to PortalSettings, the secret, the child's command line."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import root
from cli.portal import generated_secret_path, portal_argv, portal_secret, portal_settings
from portal.settings import SECRET_ENV, PortalSettings, SettingsError
from switch import config as C
from switch.config import ConfigError, load_config
from switch.logs import configure as configure_logs

SECRET = "s" * 40


def test_every_portal_key_reaches_the_portals_settings() -> None:
    cfg = load_config(None, env={}, overrides=["portal.port=9443", "portal.session_idle_s=120",
                                               "portal.trusted_proxies=10.0.0.1, 10.0.0.2",
                                               "portal.default_locale=zh_CN"])
    settings = portal_settings(cfg, SECRET.encode())
    settings.check()
    names = {f.name for f in dataclasses.fields(PortalSettings)}
    # enabled is the daemon's question; the rest is the portal's, under the same name.
    # enabled and dsn are the daemon's: whether it starts the portal, and as whom it connects.
    assert set(C.PORTAL_SCHEMA) - {"enabled", "dsn"} <= names
    assert (settings.port, settings.session_idle_s, settings.default_locale) == (9443, 120, "zh_CN")
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert settings.public_base_url == "http://127.0.0.1:9443"
    assert (settings.tls_cert_file, settings.secret_file) == (None, None)


def test_public_base_url_wins_and_tls_makes_https() -> None:
    cfg = load_config(None, env={}, overrides=["portal.public_base_url=https://portal.example/"])
    assert cfg.portal.url == "https://portal.example"
    cfg = load_config(None, env={}, overrides=["portal.tls_cert_file=c.pem", "portal.tls_key_file=k.pem"])
    assert cfg.portal.url == "https://127.0.0.1:8080"


def test_port_from_the_environment_and_bad_combinations_refused() -> None:
    assert load_config(None, env={"SWITCHD_PORTAL_PORT": "8181"}).portal.port == 8181
    with pytest.raises(ConfigError, match="portal.tls_key_file"):
        load_config(None, env={}, overrides=["portal.tls_cert_file=c.pem"])
    with pytest.raises(ConfigError, match="portal.session_idle_s"):
        load_config(None, env={}, overrides=["portal.session_idle_s=7200", "portal.session_absolute_s=3600"])
    with pytest.raises(ConfigError, match="portal.secret"):
        load_config(None, env={}, overrides=["portal.secret=abc"])  # never a key of the configuration


def test_secret_from_env_then_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("f" * 40 + "\n")
    cfg = load_config(None, env={}, overrides=[f"portal.secret_file={secret_file}", f"daemon.state_dir={tmp_path}"])
    assert portal_secret(cfg, {SECRET_ENV: SECRET}) == (SECRET.encode(), "env")
    assert portal_secret(cfg, {}) == (b"f" * 40, "file")
    assert not generated_secret_path(cfg).exists()
    missing = load_config(None, env={}, overrides=[f"portal.secret_file={tmp_path / 'nope'}"])
    with pytest.raises(SettingsError, match="nope"):
        portal_secret(missing, {})


def test_secret_generated_once_private_and_never_logged(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides=[f"daemon.state_dir={tmp_path / 'state'}"])
    out = io.StringIO()
    configure_logs("info", stream=out)
    secret, source = portal_secret(cfg, {})
    path = generated_secret_path(cfg)
    assert source == "generated" and path == tmp_path / "state" / "portal-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert portal_secret(cfg, {}) == (secret, "generated")  # read again, not replaced
    assert "portal_secret_generated" in out.getvalue() and secret.decode() not in out.getvalue()


def test_the_child_command_line_carries_config_and_overrides() -> None:
    argv = portal_argv("/py", {"config_path": "/etc/switchd.toml", "overrides": ("portal.port=1",)})
    assert argv == ["/py", "-m", "cli.main", "--config", "/etc/switchd.toml", "--set", "portal.port=1", "portal"]
    assert portal_argv("/py", {}) == ["/py", "-m", "cli.main", "portal"]


def test_a_bad_portal_setting_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "too short")
    monkeypatch.delenv("SWITCHD_CONFIG", raising=False)
    monkeypatch.delenv(C.ENV_PORTAL_PORT, raising=False)
    os.environ.pop("SWITCHD_PORTAL_PARENT_PID", None)
    result = CliRunner().invoke(root, ["--set", f"daemon.state_dir={tmp_path}", "portal"], obj={})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("switchd: portal: portal secret must be at least 32 bytes"), result.output


def test_every_api_key_reaches_the_portals_api_settings() -> None:
    from portal.settings import ApiSettings

    cfg = load_config(None, env={}, overrides=["api.access_token_ttl_s=60", "api.rate_member_per_s=2.5",
                                               "api.page_limit_max=50"])
    settings = portal_settings(cfg, SECRET.encode())
    settings.check()
    assert set(C.API_SCHEMA) == {f.name for f in dataclasses.fields(ApiSettings)}
    assert (settings.api.access_token_ttl_s, settings.api.rate_member_per_s, settings.api.page_limit_max) == (
        60, 2.5, 50)
    with pytest.raises(ConfigError, match="api.page_limit_default"):
        load_config(None, env={}, overrides=["api.page_limit_default=60", "api.page_limit_max=50"])
