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

# Reached without a session (the members' login and activation pages too).
PUBLIC = frozenset({"login", "static", "member_login", "member_activate"})

# A member's own pages (portal.member_web.member_page): a member's session only, never an
# operator's; each page shows the member's own objects only (another member's answer 404).
MEMBER_ROUTES = frozenset({"member_home", "member_logout", "member_password"})
# The member's self-service pages (portal/pages/member_pages.py).
_MEMBER_PAGES = frozenset({"member_profile", "member_profile_edit", "member_balances", "member_history",
                           "member_rates", "member_cards", "member_card_block"})
MEMBER_ROUTES |= _MEMBER_PAGES

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
                                              "member_activation", "terminals", "terminal_view",
                                              "terminal_new", "terminal_edit", "terminal_status"})

# The platform's: programs, fees, BIN ranges, settlement, statistics, audit.
# The platform's users see every merchant's figures; a merchant's admin its own statistics and
# settlement, its operator its own statistics (no settlement). Only the platform admin changes
# programs, fee schedules and BIN ranges; the platform operator reads them.
_PLATFORM: dict[str, frozenset[Role]] = {
    "stats": EVERYONE,
    "stats_csv": EVERYONE,
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
    "fees": frozenset({PA, PO}),
    "fee_edit": frozenset({PA}),
    "bins": frozenset({PA, PO}),
    "bin_new": frozenset({PA}),
    "bin_remove": frozenset({PA}),
}
_PLATFORM_SCOPED: frozenset[str] = frozenset({"stats", "stats_csv", "settlement_day", "settlement_file",
                                                       "settlement_matrix_csv",
                                                       "transactions_export"})

RULES: dict[str, frozenset[Role]] = {**_CORE, **_MERCHANT, **_PLATFORM}
# The routes that check the object's merchant against the user's (another's answers 404).
MERCHANT_SCOPED = _CORE_SCOPED | _MERCHANT_SCOPED | _PLATFORM_SCOPED

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
