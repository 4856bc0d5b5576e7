"""Redeeming a points top-up card from the member's page or the member API: one path for both.

The member's card is checked to be the member's own; failed guesses count against the member and
the client's address (``[vouchers]``); the ledger work is :func:`ledger.loyalty.vouchers.redeem`.
"""

from __future__ import annotations

from ledger.loyalty import vouchers
from ledger.loyalty.outcomes import Channel
from portal.web import Portal


class Unavailable(Exception):
    """The portal runs without the ledger or without a master key: no redemption can be taken."""


async def redeem_for_member(portal: Portal, member_id: int, card_id: int | None, serial: str, code: str,
                            address: str, channel: Channel) -> vouchers.Redemption:
    """Redeem card ``serial`` with ``code`` for one of ``member_id``'s cards (default: its first active)."""
    if portal.loyalty is None or portal.master_key is None:
        raise Unavailable("top-up cards cannot be redeemed now")
    who = vouchers.Subjects(member_id=member_id, address=address)
    target = await vouchers.member_card(portal.pool, member_id, card_id)
    if target is None:
        return vouchers.Redemption(vouchers.Refusal.NO_CARD, serial)
    return await vouchers.redeem(portal.loyalty.ledger, portal.pool, portal.master_key, serial.strip(),
                                 code.strip(), target, who, portal.settings.vouchers, channel=channel)
