"""``python -m portal --dsn DSN [--host H] [--port P]``: serve the portal alone.

The secret comes from ``$SWITCHD_PORTAL_SECRET`` or ``--secret-file``. ``--demo-users``
first creates the demo users (portal.demo) in a database seeded with the demo data.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import uvloop

from ledger import db as ledger_db
from ledger.keys import KeyStoreError, load_master_key
from ledger.loyalty import card_numbers
from portal.settings import PortalSettings, SettingsError, load_secret

MASTER_KEY_ENV = "SWITCHD_MASTER_KEY"  # as the daemon's [security] master_key_env defaults


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve; a bad setting is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m portal", description="Serve the switchd portal.")
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN of the switchd database.")
    parser.add_argument("--host", default=PortalSettings.host)
    parser.add_argument("--port", type=int, default=PortalSettings.port)
    parser.add_argument("--secret-file", default=None, help="File holding the portal secret.")
    parser.add_argument("--demo-users", action="store_true", help="Create the demo users first.")
    parser.add_argument("--master-key-file", default="",
                        help="File holding the master key that seals terminals' MAC keys (else $SWITCHD_MASTER_KEY).")
    args = parser.parse_args(argv)
    try:
        settings = replace(PortalSettings(), host=args.host, port=args.port, secret_file=args.secret_file,
                           public_base_url=f"http://{args.host}:{args.port}",
                           secret=load_secret(args.secret_file))
        settings.check()
        master_key = load_master_key(args.master_key_file, MASTER_KEY_ENV)
    except (SettingsError, KeyStoreError) as exc:
        print(f"portal: {exc}", file=sys.stderr)
        return 2
    from portal.server import serve  # after the checks: a bad setting answers fast

    async def run() -> None:
        if master_key is not None:  # the demo's members are found by their card numbers
            card_numbers.set_master_key(master_key)
        if args.demo_users:
            from portal.demo import seed_users

            conn = await ledger_db.connect(args.dsn)
            try:
                async with conn.transaction():
                    await seed_users(conn)
            finally:
                await conn.close()
        # Without the configuration's [ledger] settings the trading seat is off here (`switchd portal` has them).
        await serve(settings, args.dsn, master_key=master_key)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
