"""Login throttling per client address: failures in a window, then a lockout.

Per-account throttling lives with the user (users.record_login_failure); this
bounds what one address can try across every login, including unknown ones.
"""

from __future__ import annotations

import asyncpg

from portal.settings import PortalSettings


async def address_locked(conn: asyncpg.Connection | asyncpg.Pool, address: str) -> bool:
    """True while ``address`` is locked out."""
    return bool(await conn.fetchval(
        "SELECT locked_until > now() FROM portal.login_throttle WHERE client_address = $1", address[:64]))


async def record_failure(conn: asyncpg.Connection | asyncpg.Pool, address: str, settings: PortalSettings) -> None:
    """Count a failure from ``address``; past the bound within the window, lock it."""
    await conn.execute(
        """
        INSERT INTO portal.login_throttle AS t (client_address, failures) VALUES ($1, 1)
        ON CONFLICT (client_address) DO UPDATE SET
            window_started_at = CASE WHEN t.window_started_at < now() - make_interval(secs => $2)
                                     THEN now() ELSE t.window_started_at END,
            failures = CASE WHEN t.window_started_at < now() - make_interval(secs => $2)
                            THEN 1 ELSE t.failures + 1 END,
            locked_until = CASE WHEN t.window_started_at >= now() - make_interval(secs => $2)
                                     AND t.failures + 1 >= $3
                                THEN now() + make_interval(secs => $4) ELSE t.locked_until END
        """, address[:64], float(settings.login_window_s), settings.login_address_failures_max,
        float(settings.login_lockout_s))
