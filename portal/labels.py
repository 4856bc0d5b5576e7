"""Display names of the portal's codes (roles, statuses), translated per request.

The codes stay as they are in the database and URLs; only what a person reads
goes through the catalogs.
"""

from __future__ import annotations

from portal.i18n import gettext as _


def role_label(role: str) -> str:
    """A role's name in the request's language."""
    names = {"platform_admin": _("Platform administrator"), "platform_operator": _("Platform operator"),
             "merchant_admin": _("Merchant administrator"), "merchant_operator": _("Merchant operator")}
    return names.get(role, role)


def status_label(status: str) -> str:
    """A merchant's status in the request's language."""
    names = {"active": _("Active"), "disabled": _("Disabled")}
    return names.get(status, status)
