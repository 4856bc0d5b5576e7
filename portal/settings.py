"""The portal's settings: where it listens, how long sessions live, how logins are throttled.

The secret that keys session ids and login-form tokens comes from the environment
(``SWITCHD_PORTAL_SECRET``) or a file, never from the database or an example file:
whoever can read the database must not be able to mint a cookie.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ledger.loyalty.exchange import DEFAULT_SETTINGS as DEFAULT_EXCHANGE_SETTINGS
from ledger.loyalty.exchange import ExchangeSettings
from ledger.loyalty.mall import DEFAULT_SETTINGS as DEFAULT_MALL_SETTINGS
from ledger.loyalty.mall import MallSettings
from ledger.loyalty.vouchers import DEFAULT_POLICY as DEFAULT_VOUCHER_POLICY
from ledger.loyalty.vouchers import GuessPolicy

SECRET_ENV = "SWITCHD_PORTAL_SECRET"
SECRET_MIN_BYTES = 32


class SettingsError(ValueError):
    """A setting the portal cannot run with; ``str()`` is one line for the operator."""


@dataclass(frozen=True)
class ApiSettings:
    """The member API's bounds (the configuration's ``[api]``; docs/api.md)."""

    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 86_400
    sessions_per_member_max: int = 10
    # Token buckets, per portal process (several processes: each has its own buckets).
    rate_member_per_s: float = 20.0
    rate_member_burst: int = 60
    rate_address_per_s: float = 50.0
    rate_address_burst: int = 200
    rate_buckets_max: int = 100_000
    body_max_bytes: int = 16 * 1024
    page_limit_default: int = 20
    page_limit_max: int = 100
    idempotency_ttl_s: int = 86_400

    def check(self) -> None:
        """Raise SettingsError for bounds that cannot work."""
        if min(self.access_token_ttl_s, self.refresh_token_ttl_s, self.sessions_per_member_max,
               self.rate_member_burst, self.rate_address_burst, self.rate_buckets_max, self.body_max_bytes,
               self.page_limit_default, self.idempotency_ttl_s) <= 0 or min(self.rate_member_per_s,
                                                                            self.rate_address_per_s) <= 0:
            raise SettingsError("api bounds must be > 0")
        if self.page_limit_default > self.page_limit_max:
            raise SettingsError("api page_limit_default must be <= page_limit_max")


@dataclass(frozen=True)
class PortalSettings:
    """Everything the portal reads at start; defaults suit a local demo on 127.0.0.1."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free one (tests)
    public_base_url: str = "http://127.0.0.1:8080"
    session_idle_s: int = 30 * 60
    session_absolute_s: int = 12 * 3600
    sessions_per_user_max: int = 10
    # Per account: this many failures in a row lock it for login_lockout_s.
    login_account_failures_max: int = 5
    # Per client address: this many failures within login_window_s lock the address.
    login_address_failures_max: int = 20
    login_window_s: int = 15 * 60
    login_lockout_s: int = 15 * 60
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Addresses whose X-Forwarded-For / -Proto headers are believed (a TLS reverse proxy).
    trusted_proxies: tuple[str, ...] = ()
    secret_file: str | None = None
    page_size_default: int = 50
    page_size_max: int = 200
    request_body_max_bytes: int = 64 * 1024
    # An uploaded image (goods, promotions): at most this; its form's body may be this much larger.
    image_size_max_bytes: int = 512 * 1024
    limit_concurrency: int = 200
    timeout_keep_alive_s: int = 5
    timeout_graceful_shutdown_s: int = 10
    db_pool_size_max: int = 10
    default_locale: str = "en"
    # Where ``switchd eod run`` writes the settlement files (the daemon's [eod] settlement_dir,
    # else <state_dir>/settlement; the default state_dir is ./var).
    settlement_dir: str = "./var/settlement"
    # Promotions: the platform approves them before they are published; the placement fee
    # charged to the merchant when one is published (minor units of its program's currency).
    promotions_need_approval: bool = True
    promotion_fee_minor: int = 0
    # E-mail copies of in-platform mail (none when smtp_host is empty).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password_file: str = ""
    smtp_timeout_s: int = 10
    smtp_attempts_max: int = 5
    # The points mall's order timeout and sweeper ([mall]).
    mall: MallSettings = DEFAULT_MALL_SETTINGS
    # Top-up cards' guessing bounds ([vouchers]).
    vouchers: GuessPolicy = DEFAULT_VOUCHER_POLICY
    # Exchange between programs ([exchange]).
    exchange: ExchangeSettings = DEFAULT_EXCHANGE_SETTINGS
    api: ApiSettings = field(default_factory=ApiSettings)
    secret: bytes = field(default=b"", repr=False)

    @property
    def tls(self) -> bool:
        """True when the portal itself terminates TLS."""
        return bool(self.tls_cert_file and self.tls_key_file)

    def check(self) -> None:
        """Raise SettingsError for settings that contradict each other or are out of range."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("portal TLS needs both tls_cert_file and tls_key_file")
        if not 0 <= self.port < 65536:
            raise SettingsError(f"portal port must be 0..65535 (0: a free one), got {self.port}")
        if not 0 < self.session_idle_s <= self.session_absolute_s:
            raise SettingsError("portal session_idle_s must be > 0 and <= session_absolute_s")
        if min(self.login_account_failures_max, self.login_address_failures_max, self.login_window_s,
               self.login_lockout_s, self.page_size_max, self.sessions_per_user_max,
               self.image_size_max_bytes) <= 0:
            raise SettingsError("portal login bounds, page_size_max, sessions_per_user_max and image_size_max_bytes "
                                "must be > 0")
        if self.smtp_host and not self.smtp_from:
            raise SettingsError("portal smtp_from must be set when smtp_host is")
        if self.promotion_fee_minor < 0:
            raise SettingsError("portal promotion_fee_minor must be >= 0")
        self.api.check()
        if len(self.secret) < SECRET_MIN_BYTES:
            raise SettingsError(f"portal secret must be at least {SECRET_MIN_BYTES} bytes: set {SECRET_ENV} "
                                "or secret_file")


def load_secret(secret_file: str | None, env: Mapping[str, str] | None = None) -> bytes:
    """The portal secret: ``$SWITCHD_PORTAL_SECRET`` when set, else the file's content (stripped)."""
    env = os.environ if env is None else env
    value = env.get(SECRET_ENV)
    if value:
        return value.encode()
    if secret_file:
        try:
            return Path(secret_file).read_bytes().strip()
        except OSError as exc:
            raise SettingsError(f"portal secret_file {secret_file}: {exc.strerror}") from None
    raise SettingsError(f"no portal secret: set {SECRET_ENV} or secret_file")
