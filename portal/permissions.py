"""Who may use which page: the rules as data, in one place.

``RULES`` maps every named route to the roles allowed to use it; a route not
listed there nor in ``PUBLIC`` is refused to everyone. A role that is not allowed
gets 403 whatever the object (no oracle). A merchant's users reach only their own
merchant's objects: for another merchant's object the page answers 404, exactly as
for one that does not exist (``MERCHANT_SCOPED`` lists the routes that check it).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    PLATFORM_OPERATOR = "platform_operator"
    MERCHANT_ADMIN = "merchant_admin"
    MERCHANT_OPERATOR = "merchant_operator"


PA, PO, MA, MO = Role.PLATFORM_ADMIN, Role.PLATFORM_OPERATOR, Role.MERCHANT_ADMIN, Role.MERCHANT_OPERATOR
EVERYONE = frozenset(Role)
PLATFORM_ROLES = frozenset({PA, PO})
MERCHANT_ROLES = frozenset({MA, MO})

# Reached without a session: the members' login and activation pages, the images of goods and
# promotions (media), a merchant's public page (its published promotions). "api": the member
# API (/api/v1) checks its own bearer tokens, not the portal's roles.
PUBLIC = frozenset({"login", "static", "member_login", "member_activate", "media", "merchant_public", "api"})

# A member's own pages (portal.member_web.member_page): a member's session only, never an
# operator's; each page shows the member's own objects only (another member's answer 404).
# Community: the member's promotions, mailbox and feedback.
_COMMUNITY_MEMBER = frozenset({"member_promotions", "member_mail", "member_mail_view", "member_mail_delete",
                               "member_feedback", "member_feedback_new", "member_feedback_view",
                               "member_feedback_reply", "member_feedback_close", "member_feedback_delete"})
# The points mall (portal/pages/member_mall.py).
_MALL_MEMBER = frozenset({"member_mall", "member_mall_good", "member_orders", "member_order", "member_order_cancel"})
MEMBER_ROUTES = frozenset({"member_home", "member_logout", "member_password", "member_card_pin"}) \
    | _COMMUNITY_MEMBER | _MALL_MEMBER
# The member's self-service pages (portal/pages/member_pages.py).
_MEMBER_PAGES = frozenset({"member_profile", "member_profile_edit", "member_balances", "member_history",
                           "member_rates", "member_cards", "member_card_block"})
MEMBER_ROUTES |= _MEMBER_PAGES
# Redeeming a points top-up card (portal/pages/member_vouchers.py).
MEMBER_ROUTES |= frozenset({"member_voucher"})
# Exchange between programs (portal/pages/member_exchange.py).
MEMBER_ROUTES |= frozenset({"member_exchange"})

# The rules, one section per area of the portal, merged into RULES below.
_CORE: dict[str, frozenset[Role]] = {
    "home": EVERYONE,
    "logout": EVERYONE,
    "password": EVERYONE,
    # Platform: merchants. The platform operator reads them; only the admin changes them.
    "merchants": frozenset({PA, PO}),
    "merchant_view": frozenset({PA, PO}),
    "merchant_new": frozenset({PA}),
    "merchant_edit": frozenset({PA}),
    "merchant_status": frozenset({PA}),
    # Operators (portal users): the platform's admin manages all, a merchant's admin its own.
    "operators": frozenset({PA, PO, MA}),
    "operator_view": frozenset({PA, PO, MA}),
    "operator_new": frozenset({PA, MA}),
    "operator_status": frozenset({PA, MA}),
    "operator_reset": frozenset({PA, MA}),
    # A merchant's own profile.
    "profile": frozenset({MA, MO}),
    "profile_edit": frozenset({MA}),
    # Transactions: everyone, a merchant's users only their merchant's.
    "transactions": EVERYONE,
}
_CORE_SCOPED = frozenset({"operators", "operator_view", "operator_new", "operator_status", "operator_reset",
                          "profile", "profile_edit", "transactions"})

# A merchant's own business: terminals, members, the web trading seat, transaction details.
# The seat, voids and refunds are a merchant's own (the platform has no seat); the platform reads
# transactions in full, members and terminals. Terminals are the merchant admin's, not the operator's.
_MERCHANT: dict[str, frozenset[Role]] = {
    "seat": frozenset({MA, MO}),
    "transaction_detail": EVERYONE,
    "transaction_void": frozenset({MA, MO}),
    "transaction_refund": frozenset({MA, MO}),
    # Members (cards) and their online logins: a merchant's admin and operator manage their program's
    # members, the platform's admin every member; the platform's operator reads.
    "members": EVERYONE,
    "member_new": frozenset({PA, MA, MO}),
    "member_view": EVERYONE,
    "member_edit": frozenset({PA, MA, MO}),
    "member_status": frozenset({PA, MA, MO}),
    "member_reset": frozenset({PA, MA, MO}),
    "member_activation": frozenset({PA, MA, MO}),
    "member_pin": frozenset({PA, MA, MO}),  # a card's PIN, typed by the member present
    # Terminals: the platform's admin all, its operator reads; a merchant's admin its own; not the operator.
    "terminals": frozenset({PA, PO, MA}),
    "terminal_view": frozenset({PA, PO, MA}),
    "terminal_new": frozenset({PA, MA}),
    "terminal_edit": frozenset({PA, MA}),
    "terminal_status": frozenset({PA, MA}),
}
_MERCHANT_SCOPED: frozenset[str] = frozenset({"seat", "transaction_detail", "transaction_void",
                                              "transaction_refund", "members", "member_new", "member_view",
                                              "member_edit", "member_status", "member_reset",
                                              "member_activation", "member_pin", "terminals", "terminal_view",
                                              "terminal_new", "terminal_edit", "terminal_status"})

# The platform's: programs, fees, BIN ranges, settlement, statistics, audit.
# The platform's users see every merchant's figures; a merchant's admin its own statistics and
# settlement, its operator its own statistics (no settlement). Only the platform admin changes
# programs, fee schedules and BIN ranges; the platform operator reads them.
_PLATFORM: dict[str, frozenset[Role]] = {
    "stats": EVERYONE,
    "stats_csv": EVERYONE,
    # The operator's revenue (every merchant's income to the platform): the platform's only.
    "revenue": frozenset({PA, PO}),
    "settlement": frozenset({PA, PO, MA}),
    "settlement_day": frozenset({PA, PO, MA}),
    "settlement_file": frozenset({PA, PO, MA}),
    "settlement_matrix_csv": frozenset({PA, PO, MA}),
    "settlement_summary": frozenset({PA, PO}),
    # The CSV export of a transaction search: whoever may search, a merchant's users their own.
    "transactions_export": EVERYONE,
    "audit": frozenset({PA, PO}),
    "programs": frozenset({PA, PO}),
    "program_view": frozenset({PA, PO}),
    "program_new": frozenset({PA}),
    "program_lottery": frozenset({PA}),
    "program_expiry": frozenset({PA}),
    "fees": frozenset({PA, PO}),
    "fee_edit": frozenset({PA}),
    "bins": frozenset({PA, PO}),
    "bin_new": frozenset({PA}),
    "bin_remove": frozenset({PA}),
    # Exchange rates between programs: everyone reads the table in force (merchants' members ask
    # them); the platform reads the history; only its admin publishes a rate.
    "exchange_rates": EVERYONE,
    "exchange_rate_new": frozenset({PA}),
}
_PLATFORM_SCOPED: frozenset[str] = frozenset({"stats", "stats_csv", "settlement_day", "settlement_file",
                                                       "settlement_matrix_csv",
                                                       "transactions_export"})

# The points mall: a merchant's users (admin and operator) manage their goods and orders; the
# platform's users read every merchant's.
_MALL: dict[str, frozenset[Role]] = {
    "mall_goods": EVERYONE,
    "mall_good_view": EVERYONE,
    "mall_good_new": frozenset({MA, MO}),
    "mall_good_edit": frozenset({MA, MO}),
    "mall_good_status": frozenset({MA, MO}),
    "mall_orders": EVERYONE,
    "mall_order_view": EVERYONE,
    "mall_order_new": frozenset({MA, MO}),
    "mall_order_edit": frozenset({MA, MO}),
    "mall_order_action": frozenset({MA, MO}),
    "mall_order_cancel": frozenset({MA, MO}),
    "mall_order_refund": frozenset({MA, MO}),
}
_MALL_SCOPED: frozenset[str] = frozenset(_MALL)

# Community: promotions, feedback, mail. A merchant's admin writes its promotions and its mail,
# its operator reads them; the platform (admin or operator) decides promotions and answers
# merchants' feedback; the platform's admin writes to merchants. Everyone answers the feedback it sees.
_COMMUNITY: dict[str, frozenset[Role]] = {
    "promotions": EVERYONE,
    "promotion_new": frozenset({MA}),
    "promotion_view": EVERYONE,
    "promotion_edit": frozenset({MA}),
    "promotion_delete": frozenset({PA, MA}),
    "promotion_review": frozenset({PA, PO}),
    "feedback": EVERYONE,
    "feedback_new": frozenset({MA, MO}),
    "feedback_view": EVERYONE,
    "feedback_reply": EVERYONE,
    "feedback_close": EVERYONE,
    "feedback_delete": frozenset({MA, MO}),
    "mail_inbox": frozenset({MA, MO}),
    "mail_view": frozenset({MA, MO}),
    "mail_delete": frozenset({MA, MO}),
    "mail_sent": frozenset({PA, PO, MA}),
    "mail_new": frozenset({PA, MA}),
}
_COMMUNITY_SCOPED: frozenset[str] = frozenset({"promotions", "promotion_view", "promotion_edit", "promotion_delete",
                                                "feedback", "feedback_view", "feedback_reply", "feedback_close",
                                                "feedback_delete", "mail_inbox", "mail_view", "mail_delete",
                                                "mail_sent", "mail_new"})

RULES: dict[str, frozenset[Role]] = {**_CORE, **_MERCHANT, **_PLATFORM, **_MALL, **_COMMUNITY}
# The routes that check the object's merchant against the user's (another's answers 404).
MERCHANT_SCOPED = _CORE_SCOPED | _MERCHANT_SCOPED | _PLATFORM_SCOPED | _MALL_SCOPED | _COMMUNITY_SCOPED

# The roles a user of each role may give to a user it creates.
GRANTS: dict[Role, tuple[Role, ...]] = {
    PA: (PA, PO, MA, MO),
    PO: (),
    MA: (MA, MO),
    MO: (),
}


def allowed(route: str, role: str) -> bool:
    """True when ``role`` may use ``route`` at all (objects are scoped separately).

    >>> allowed("merchants", "platform_operator"), allowed("merchant_new", "platform_operator")
    (True, False)
    >>> allowed("no_such_route", "platform_admin")
    False
    """
    return route in PUBLIC or role in RULES.get(route, frozenset())


def visible(user_role: str, user_merchant_id: str | None, object_merchant_id: str | None) -> bool:
    """May a user see an object owned by ``object_merchant_id`` (None = the platform's)?

    >>> visible("platform_operator", None, "M1"), visible("merchant_admin", "M1", "M1")
    (True, True)
    >>> visible("merchant_admin", "M1", "M2"), visible("merchant_admin", "M1", None)
    (False, False)
    """
    if user_role in PLATFORM_ROLES:
        return True
    return user_merchant_id is not None and object_merchant_id == user_merchant_id
