"""Daemon configuration: defaults, then one TOML file, then the environment, then overrides.

Every key, its type and its default live in the ``SCHEMA`` tables below, and
nowhere else: the configuration dataclasses, the ledger engine's settings and
the example file (config/switchd.toml, checked by a test) take them from here.
Later sources win: defaults < file < environment (``SWITCHD_DSN``, ...,
``SWITCHD_PORTAL_PORT``, ``SWITCHD_LISTENER_<NAME>_PORT``) < overrides (``SECTION.KEY=VALUE`` or
``listeners.NAME.KEY=VALUE``, e.g. from ``switchd --set``). Validation failures
raise :class:`ConfigError` whose message is one line that names the key, e.g.
``config: ledger.batch_size_max: must be between 1 and 10000, got 0``.

>>> cfg = load_config(None, env={"SWITCHD_LISTENER_MIS_PORT": "9584"}, overrides=["ledger.batch_size_max=64"])
>>> cfg.ledger.batch_size_max, [(lc.name, lc.port) for lc in cfg.listeners]
(64, [('pos', 8583), ('mis', 9584)])
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.engine import LedgerSettings
from ledger.errors import SwitchdError
from ledger.loyalty.exchange import ExchangeSettings
from ledger.loyalty.mall import MallSettings
from ledger.loyalty.preauth import PreauthSettings
from ledger.loyalty.vouchers import GuessPolicy

ENV_CONFIG = "SWITCHD_CONFIG"
ENV_DSN = "SWITCHD_DSN"
ENV_STATE_DIR = "SWITCHD_STATE_DIR"
ENV_LOG_LEVEL = "SWITCHD_LOG_LEVEL"
ENV_METRICS_PORT = "SWITCHD_METRICS_PORT"
ENV_LISTENER_PORT = "SWITCHD_LISTENER_{NAME}_PORT"  # NAME: the listener's name, upper-cased
ENV_PORTAL_PORT = "SWITCHD_PORTAL_PORT"


class ConfigError(SwitchdError):
    """A configuration problem; ``str()`` is one line naming the key."""


Check = Callable[[Any], str | None]


def _at_least(minimum: float) -> Check:
    return lambda v: None if v >= minimum else f"must be >= {minimum}, got {v}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


# key -> (type, default, check). Types: int, float (ints accepted), str, bool.
Schema = dict[str, tuple[type, Any, Check | None]]

DAEMON_SCHEMA: Schema = {
    "state_dir": (str, "./var", None),
    "log_level": (str, "info", _one_of("debug", "info", "warning", "error")),
    "timeout_drain_s": (float, 10.0, _between(0, 3600)),
    "workers": (int, 1, _between(1, 64)),
    # Young-generation threshold of Python's cycle collector (CPython's default is 700): a
    # request allocates hundreds of objects, so collections come less often at 10,000.
    "gc_gen0_threshold": (int, 10_000, _between(100, 1_000_000)),
}

DATABASE_SCHEMA: Schema = {
    "dsn": (str, "", None),
    "pool_size_min": (int, 2, _between(1, 100)),
    "pool_size_max": (int, 20, _between(1, 500)),
    "timeout_connect_s": (float, 10.0, _between(0.1, 300)),
    "timeout_statement_s": (float, 30.0, _between(0.1, 3600)),
    "embedded_port": (int, 5439, _between(1024, 65535)),
    "coalesced_inflight_max": (int, 2, _between(1, 16)),
    "coalesced_linger_ms": (float, 0.0, _between(0, 100)),
    # A read-only DSN (a standby) for what only reads: the portal's search, statistics, exports.
    "read_dsn": (str, "", None),
    "read_staleness_max_s": (float, 5.0, _between(0, 3600)),
}

LEDGER_SCHEMA: Schema = {
    "batch_size_max": (int, 512, _between(1, 10_000)),
    "batch_linger_ms": (float, 1.0, _between(0, 1000)),
    "batches_inflight_max": (int, 2, _between(1, 16)),
    "queue_depth_max": (int, 20_000, _between(1, 1_000_000)),
    "timeout_post_s": (float, 5.0, _between(0.01, 600)),
    "retries_max": (int, 3, _between(0, 20)),
    "legs_per_command_max": (int, 16, _between(1, 256)),
    "hold_timeout_max_s": (int, 7 * 86_400, _between(1, 365 * 86_400)),
    "batches_per_connection_max": (int, 1_000, _between(1, 1_000_000)),
}

SECURITY_SCHEMA: Schema = {
    "master_key_file": (str, "", None),
    "master_key_env": (str, "SWITCHD_MASTER_KEY", None),
    # A terminal without a MAC key moves money with its ids alone: refused (63) unless allowed.
    "unkeyed_terminals": (str, "refuse", _one_of("refuse", "allow")),
    # During a master-key rotation: the key rows may still be sealed under (unseal only).
    "master_key_previous_file": (str, "", None),
    # Wrong PINs in a row before a card takes no PIN (75) until unlocked or given a new PIN.
    "pin_tries_max": (int, 3, _between(1, 20)),
    # Chip data (field 55) kept per purchase for disputes, at most this many days (0: never kept).
    "chip_data_keep_days": (int, 180, _between(0, 3650)),
}

EOD_SCHEMA: Schema = {
    "settlement_dir": (str, "", None),  # empty: <state_dir>/settlement
    "wait_lock_s": (float, 0.0, _between(0, 3600)),
}

METRICS_SCHEMA: Schema = {
    "enabled": (bool, True, None),
    "host": (str, "127.0.0.1", None),
    "port": (int, 9583, _between(0, 65535)),
}

# The web portal (portal/). Its secret is never a key here: $SWITCHD_PORTAL_SECRET or secret_file.
PORTAL_SCHEMA: Schema = {
    "enabled": (bool, True, None),  # switchd serve runs it as a supervised child process
    # Empty: the daemon's [database] dsn. With least-privilege roles, the portal's own role.
    "dsn": (str, "", None),
    "host": (str, "127.0.0.1", None),
    "port": (int, 8080, _between(0, 65535)),  # 0: a free one
    "public_base_url": (str, "", None),  # empty: http(s)://host:port
    "session_idle_s": (int, 30 * 60, _between(60, 86_400)),
    "session_absolute_s": (int, 12 * 3600, _between(60, 30 * 86_400)),
    "sessions_per_user_max": (int, 10, _between(1, 1000)),
    "login_account_failures_max": (int, 5, _between(1, 1000)),
    "login_address_failures_max": (int, 20, _between(1, 100_000)),
    "login_window_s": (int, 15 * 60, _between(1, 86_400)),
    "login_lockout_s": (int, 15 * 60, _between(1, 86_400)),
    "tls_cert_file": (str, "", None),
    "tls_key_file": (str, "", None),
    "trusted_proxies": (str, "", None),  # comma-separated addresses of TLS reverse proxies
    "secret_file": (str, "", None),  # empty: $SWITCHD_PORTAL_SECRET, else <state_dir>/portal-secret
    "db_pool_size_max": (int, 10, _between(1, 500)),
    "limit_concurrency": (int, 200, _between(1, 100_000)),
    "default_locale": (str, "en", _one_of("en", "zh_CN")),
    "promotions_need_approval": (bool, True, None),
    "promotion_fee_minor": (int, 0, _between(0, 100_000_000)),
    "smtp_host": (str, "", None),  # empty: no e-mail copies of in-platform mail
    "smtp_port": (int, 25, _between(1, 65535)),
    "smtp_from": (str, "", None),
    "smtp_starttls": (bool, False, None),
    "smtp_username": (str, "", None),
    "smtp_password_file": (str, "", None),  # the password is never a key here
    "smtp_timeout_s": (int, 10, _between(1, 300)),
    "smtp_attempts_max": (int, 5, _between(1, 100)),
    "image_size_max_bytes": (int, 512 * 1024, _between(1024, 16 * 1024 * 1024)),
}

# The points mall (ledger/loyalty/mall.py): order holds and the portal's sweeper of due orders.
MALL_SCHEMA: Schema = {
    "order_confirm_timeout_s": (int, 259_200, _between(60, 365 * 86_400)),
    "sweep_interval_s": (float, 60.0, _between(0.1, 86_400)),
    "sweep_batch_max": (int, 100, _between(1, 10_000)),
    "placing_stale_s": (int, 300, _between(10, 86_400)),
}

# Stored-value pre-authorisations over ISO 8583 (0100; ledger/loyalty/preauth.py): their holds' lives.
PREAUTH_SCHEMA: Schema = {
    "hold_timeout_default_s": (int, 3_600, _between(1, 365 * 86_400)),
    "hold_timeout_max_s": (int, 86_400, _between(1, 365 * 86_400)),
}

# Points top-up cards (ledger/loyalty/vouchers.py): failed redemptions per member, client address
# and terminal before a lockout.
VOUCHERS_SCHEMA: Schema = {
    "failures_max": (int, 5, _between(1, 1000)),
    "failure_window_s": (int, 900, _between(1, 7 * 86_400)),
    "lockout_s": (int, 900, _between(1, 30 * 86_400)),
}

# Exchange between programs (ledger/loyalty/exchange.py).
EXCHANGE_SCHEMA: Schema = {
    "member_daily_points_max": (int, 1_000_000, _between(1, 1_000_000_000)),
}

# The member API for apps (/api/v1, served by the portal: docs/api.md).
API_SCHEMA: Schema = {
    "access_token_ttl_s": (int, 15 * 60, _between(1, 86_400)),
    "refresh_token_ttl_s": (int, 30 * 86_400, _between(60, 365 * 86_400)),
    "sessions_per_member_max": (int, 10, _between(1, 1000)),
    # Token buckets, per portal process: a steady rate per second and a burst.
    "rate_member_per_s": (float, 20.0, _between(0.01, 100_000)),
    "rate_member_burst": (int, 60, _between(1, 1_000_000)),
    "rate_address_per_s": (float, 50.0, _between(0.01, 100_000)),
    "rate_address_burst": (int, 200, _between(1, 1_000_000)),
    "rate_buckets_max": (int, 100_000, _between(100, 10_000_000)),
    "body_max_bytes": (int, 16 * 1024, _between(256, 1024 * 1024)),
    "page_limit_default": (int, 20, _between(1, 1000)),
    "page_limit_max": (int, 100, _between(1, 1000)),
    "idempotency_ttl_s": (int, 86_400, _between(60, 30 * 86_400)),
}

LISTENER_SCHEMA: Schema = {
    "name": (str, "pos", None),
    "host": (str, "127.0.0.1", None),
    "port": (int, 8583, _between(0, 65535)),
    "framing": (str, "nac2", _one_of("nac2", "ascii4")),
    "tpdu": (bool, False, None),
    "spec": (str, "pos", _one_of("pos", "mis")),
    "tls_cert_file": (str, "", None),
    "tls_key_file": (str, "", None),
    "connections_max": (int, 10_000, _between(1, 1_000_000)),
    # From one client address: a terminal concentrator or a shop's NAT holds many; no host all.
    "connections_per_address_max": (int, 1_000, _between(1, 1_000_000)),
    "timeout_idle_s": (float, 300.0, _between(0.01, 86_400)),
    "timeout_frame_s": (float, 5.0, _between(0.01, 3600)),
    "timeout_handler_s": (float, 10.0, _between(0.01, 600)),
    "frame_bytes_max": (int, 4096, _between(64, 65_535)),
    "inflight_per_connection_max": (int, 32, _between(1, 10_000)),
    "sign_on_required": (bool, True, None),
}

LISTENER_NAME = re.compile(r"[a-z0-9_]+")

# Without [[listeners]] in the file: POS (the schema's defaults) and MIS.
DEFAULT_LISTENERS: list[dict[str, Any]] = [
    {},
    {"name": "mis", "port": 8584, "framing": "ascii4", "spec": "mis", "sign_on_required": False},
]


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str
    log_level: str
    timeout_drain_s: float
    workers: int
    gc_gen0_threshold: int


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str
    pool_size_min: int
    pool_size_max: int
    timeout_connect_s: float
    timeout_statement_s: float
    embedded_port: int
    coalesced_inflight_max: int
    coalesced_linger_ms: float
    read_dsn: str
    read_staleness_max_s: float


@dataclass(frozen=True)
class SecurityConfig:
    master_key_file: str
    master_key_env: str
    unkeyed_terminals: str
    master_key_previous_file: str
    pin_tries_max: int
    chip_data_keep_days: int


@dataclass(frozen=True)
class EodConfig:
    settlement_dir: str
    wait_lock_s: float


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class PortalConfig:
    enabled: bool
    dsn: str
    host: str
    port: int
    public_base_url: str
    session_idle_s: int
    session_absolute_s: int
    sessions_per_user_max: int
    login_account_failures_max: int
    login_address_failures_max: int
    login_window_s: int
    login_lockout_s: int
    tls_cert_file: str
    tls_key_file: str
    trusted_proxies: str
    secret_file: str
    db_pool_size_max: int
    limit_concurrency: int
    default_locale: str
    promotions_need_approval: bool
    promotion_fee_minor: int
    smtp_host: str
    smtp_port: int
    smtp_from: str
    smtp_starttls: bool
    smtp_username: str
    smtp_password_file: str
    smtp_timeout_s: int
    smtp_attempts_max: int
    image_size_max_bytes: int

    @property
    def url(self) -> str:
        """Where browsers reach the portal: ``public_base_url``, else the scheme, host and port."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def proxies(self) -> tuple[str, ...]:
        """``trusted_proxies`` as a tuple of addresses."""
        return tuple(p.strip() for p in self.trusted_proxies.split(",") if p.strip())


@dataclass(frozen=True)
class ApiConfig:
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    sessions_per_member_max: int
    rate_member_per_s: float
    rate_member_burst: int
    rate_address_per_s: float
    rate_address_burst: int
    rate_buckets_max: int
    body_max_bytes: int
    page_limit_default: int
    page_limit_max: int
    idempotency_ttl_s: int


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    host: str
    port: int
    framing: str
    tpdu: bool
    spec: str
    tls_cert_file: str
    tls_key_file: str
    connections_max: int
    connections_per_address_max: int
    timeout_idle_s: float
    timeout_frame_s: float
    timeout_handler_s: float
    frame_bytes_max: int
    inflight_per_connection_max: int
    sign_on_required: bool


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    database: DatabaseConfig
    ledger: LedgerSettings  # the engine's own settings: [ledger] names exactly its fields
    security: SecurityConfig
    metrics: MetricsConfig
    eod: EodConfig
    portal: PortalConfig
    api: ApiConfig
    mall: MallSettings  # the mall's own settings: [mall] names exactly its fields
    preauth: PreauthSettings  # pre-authorisations' own settings: [preauth] names exactly its fields
    vouchers: GuessPolicy  # top-up cards' guessing bounds: [vouchers] names exactly its fields
    exchange: ExchangeSettings  # [exchange] names exactly its fields
    listeners: list[ListenerConfig]
    source: str  # the file read, or "<defaults>"

    @property
    def state_path(self) -> Path:
        return Path(self.daemon.state_dir).resolve()


SECTIONS: dict[str, tuple[Schema, type]] = {
    "daemon": (DAEMON_SCHEMA, DaemonConfig),
    "database": (DATABASE_SCHEMA, DatabaseConfig),
    "ledger": (LEDGER_SCHEMA, LedgerSettings),
    "security": (SECURITY_SCHEMA, SecurityConfig),
    "metrics": (METRICS_SCHEMA, MetricsConfig),
    "eod": (EOD_SCHEMA, EodConfig),
    "portal": (PORTAL_SCHEMA, PortalConfig),
    "api": (API_SCHEMA, ApiConfig),
    "mall": (MALL_SCHEMA, MallSettings),
    "preauth": (PREAUTH_SCHEMA, PreauthSettings),
    "vouchers": (VOUCHERS_SCHEMA, GuessPolicy),
    "exchange": (EXCHANGE_SCHEMA, ExchangeSettings),
}


def _coerce(where: str, kind: type, value: Any) -> Any:
    # bool is an int subclass in Python; TOML keeps them apart and so do we.
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config: {where}: expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"config: {where}: expected a string, got {value!r}")
    return value


def _from_text(where: str, kind: type, text: str) -> Any:
    """A value given as text (environment, override), read as the key's type."""
    if kind is bool:
        if text.strip().lower() not in ("true", "false"):
            raise ConfigError(f"config: {where}: expected true or false, got {text!r}")
        return text.strip().lower() == "true"
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"config: {where}: expected {expected}, got {text!r}") from None
    return text


def _checked(where: str, check: Check | None, value: Any) -> Any:
    if check is not None and (problem := check(value)):
        raise ConfigError(f"config: {where}: {problem}")
    return value


def _build(prefix: str, schema: Schema, raw: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: {prefix}: expected a table, got {raw!r}")
    for key in raw:
        if key not in schema:
            raise ConfigError(f"config: {prefix}.{key}: unknown key")
    out: dict[str, Any] = {}
    for key, (kind, default, check) in schema.items():
        where = f"{prefix}.{key}"
        out[key] = _checked(where, check, _coerce(where, kind, raw[key]) if key in raw else default)
    return out


def _set(values: dict[str, Any], schema: Schema, key: str, where: str, text: str) -> None:
    kind, _default, check = schema[key]
    values[key] = _checked(where, check, _from_text(where, kind, text))


def _named(listeners: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The listeners by name; each name [a-z0-9_]+ and unique."""
    by_name: dict[str, dict[str, Any]] = {}
    for i, values in enumerate(listeners):
        name = values["name"]
        if not LISTENER_NAME.fullmatch(name):
            raise ConfigError(f"config: listeners[{i}].name: must be lower-case letters, digits or _, got {name!r}")
        if name in by_name:
            raise ConfigError(f"config: listeners[{i}].name: duplicate listener name {name!r}")
        by_name[name] = values
    return by_name


def _apply_override(sections: dict[str, dict[str, Any]], listeners: list[dict[str, Any]], text: str) -> None:
    """One ``SECTION.KEY=VALUE`` or ``listeners.NAME.KEY=VALUE``, read as the key's type."""
    path, sep, value = text.partition("=")
    path = path.strip()
    where = f"{path} (--set)"
    parts = path.split(".")
    shape = 3 if parts[0] == "listeners" else 2
    if not sep or len(parts) != shape or not all(parts):
        raise ConfigError(f"config: --set {text!r}: expected SECTION.KEY=VALUE or listeners.NAME.KEY=VALUE")
    if shape == 3:
        name, key = parts[1], parts[2]
        found = _named(listeners).get(name)
        if found is None:
            known = ", ".join(lc["name"] for lc in listeners) or "none"
            raise ConfigError(f"config: {where}: no listener named {name!r} (listeners: {known})")
        values, schema = found, LISTENER_SCHEMA
    else:
        section, key = parts
        if section not in SECTIONS:
            raise ConfigError(f"config: {where}: unknown section {section!r}")
        values, schema = sections[section], SECTIONS[section][0]
    if key not in schema:
        raise ConfigError(f"config: {where}: unknown key")
    _set(values, schema, key, where, value)


# Environment variable -> the key it sets.
ENV_KEYS: dict[str, tuple[str, str]] = {
    ENV_DSN: ("database", "dsn"),
    ENV_STATE_DIR: ("daemon", "state_dir"),
    ENV_LOG_LEVEL: ("daemon", "log_level"),
    ENV_METRICS_PORT: ("metrics", "port"),
    ENV_PORTAL_PORT: ("portal", "port"),
}


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str], source: str = "<defaults>",
                 overrides: Sequence[str] = ()) -> Config:
    """Validate a raw TOML mapping, apply the environment, then ``overrides``; return a Config."""
    known = set(SECTIONS) | {"listeners"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"config: {key}: unknown section")
    sections: dict[str, dict[str, Any]] = {}
    for name, (schema, _cls) in SECTIONS.items():
        sections[name] = _build(name, schema, raw.get(name, {}))
    raw_listeners = raw.get("listeners", DEFAULT_LISTENERS)
    if not isinstance(raw_listeners, list):
        raise ConfigError("config: listeners: expected an array of tables ([[listeners]])")
    listeners = [_build(f"listeners[{i}]", LISTENER_SCHEMA, item) for i, item in enumerate(raw_listeners)]

    # The environment wins over the file: operators override one value without editing it.
    for var, (section, key) in ENV_KEYS.items():
        if var in env:
            _set(sections[section], SECTIONS[section][0], key, f"{var} ({section}.{key})", env[var])
    for name, values in _named(listeners).items():
        var = ENV_LISTENER_PORT.format(NAME=name.upper())
        if var in env:
            _set(values, LISTENER_SCHEMA, "port", f"{var} (listeners.{name}.port)", env[var])
    # Overrides win over everything (switchd --set).
    for text in overrides:
        _apply_override(sections, listeners, text)

    db = sections["database"]
    if db["pool_size_min"] > db["pool_size_max"]:
        raise ConfigError("config: database.pool_size_min: must be <= database.pool_size_max")
    if sections["mall"]["order_confirm_timeout_s"] > sections["ledger"]["hold_timeout_max_s"]:
        raise ConfigError("config: mall.order_confirm_timeout_s: must be <= ledger.hold_timeout_max_s")
    preauth = sections["preauth"]
    if preauth["hold_timeout_max_s"] > sections["ledger"]["hold_timeout_max_s"]:
        raise ConfigError("config: preauth.hold_timeout_max_s: must be <= ledger.hold_timeout_max_s")
    if preauth["hold_timeout_default_s"] > preauth["hold_timeout_max_s"]:
        raise ConfigError("config: preauth.hold_timeout_default_s: must be <= preauth.hold_timeout_max_s")
    portal = sections["portal"]
    if bool(portal["tls_cert_file"]) != bool(portal["tls_key_file"]):
        raise ConfigError("config: portal.tls_key_file: TLS needs both tls_cert_file and tls_key_file")
    if portal["session_idle_s"] > portal["session_absolute_s"]:
        raise ConfigError("config: portal.session_idle_s: must be <= portal.session_absolute_s")
    api = sections["api"]
    if api["page_limit_default"] > api["page_limit_max"]:
        raise ConfigError("config: api.page_limit_default: must be <= api.page_limit_max")
    _named(listeners)  # an override may have renamed one
    for i, values in enumerate(listeners):
        if bool(values["tls_cert_file"]) != bool(values["tls_key_file"]):
            raise ConfigError(
                f"config: listeners[{i}].tls_key_file: TLS needs both tls_cert_file and tls_key_file"
            )
        if values["tpdu"] and values["framing"] != "nac2":
            raise ConfigError(f"config: listeners[{i}].tpdu: a TPDU is only defined for nac2 framing")

    built = {name: cls(**sections[name]) for name, (_schema, cls) in SECTIONS.items()}
    return Config(listeners=[ListenerConfig(**values) for values in listeners], source=source, **built)


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None,
                overrides: Sequence[str] = ()) -> Config:
    """Load and validate configuration: defaults < the file < the environment < ``overrides``.

    ``path`` None means: ``$SWITCHD_CONFIG`` if set, else built-in defaults. ``env`` None
    means the process's environment. Each override is ``SECTION.KEY=VALUE`` or
    ``listeners.NAME.KEY=VALUE``, its value read as the key's type.
    Raises ConfigError with a one-line message on any problem.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get(ENV_CONFIG) or None
    if path is None:
        return parse_config({}, env, overrides=overrides)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {p}: invalid TOML: {exc}") from None
    return parse_config(raw, env, source=str(p), overrides=overrides)
