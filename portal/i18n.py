"""Languages: gettext catalogs (Babel) for English and Simplified Chinese, chosen per request.

The catalogs are the ``.po`` files under ``portal/locale/``, compiled in memory at
start (no build step, nothing generated in the tree). The language of a request is,
in order: ``?lang=`` (which also sets the ``swd_lang`` cookie), that cookie, the
browser's Accept-Language, the default. Every page links to each language.
"""

from __future__ import annotations

import datetime as dt
import gettext as gettext_mod
import io
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale, dates, numbers
from babel.messages import Catalog, mofile, pofile
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.loyalty.programs import KNOWN_CURRENCIES

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LOCALES = ("en", "zh_CN")
LANGUAGE_NAMES = {"en": "English", "zh_CN": "中文"}
COOKIE = "swd_lang"
COOKIE_MAX_AGE_S = 365 * 86400

_catalogs: dict[str, gettext_mod.NullTranslations] = {}
_current: ContextVar[str] = ContextVar("portal_locale", default="en")


def load_catalogs(directory: Path = LOCALE_DIR) -> None:
    """Compile every locale's catalogs in memory (every ``.po`` under its LC_MESSAGES, one per
    area of the portal, read in name order into one catalog); English falls back to the ids."""
    for code in LOCALES:
        merged = Catalog(locale=code)
        for path in sorted((directory / code / "LC_MESSAGES").glob("*.po")):
            with path.open("rb") as f:
                for message in pofile.read_po(f, locale=code):
                    if message.id:
                        merged[message.id] = message
        buf = io.BytesIO()
        mofile.write_mo(buf, merged)
        buf.seek(0)
        _catalogs[code] = gettext_mod.GNUTranslations(buf)


def current_locale() -> str:
    """The language of the request being served."""
    return _current.get()


def gettext(message: str) -> str:
    """``message`` in the request's language."""
    catalog = _catalogs.get(_current.get())
    return catalog.gettext(message) if catalog is not None else message


def N_(message: str) -> str:
    """Mark a message for the catalogs where it is defined; translate it with gettext where shown."""
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message in the request's language."""
    catalog = _catalogs.get(_current.get())
    if catalog is None:
        return singular if n == 1 else plural
    return catalog.ngettext(singular, plural, n)


def negotiate(query_lang: str | None, cookie_lang: str | None, accept_language: str, default: str) -> str:
    """The language to answer in.

    >>> negotiate(None, None, "zh-CN,zh;q=0.9,en;q=0.8", "en"), negotiate("en", "zh_CN", "", "en")
    ('zh_CN', 'en')
    >>> negotiate(None, None, "fr", "en"), negotiate(None, None, "zh", "en")
    ('en', 'zh_CN')
    """
    for chosen in (query_lang, cookie_lang):
        if chosen in LOCALES:
            return chosen
    wanted = []
    for part in accept_language.split(",")[:20]:  # bounded: the header is the client's to make long
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        if tag:
            wanted.append((weight, tag.strip().replace("-", "_")))
    for _weight, tag in sorted(wanted, key=lambda w: -w[0]):
        if tag in LOCALES:
            return tag
        lang = tag.split("_")[0].lower()
        if lang == "zh":
            return "zh_CN"
        if lang == "en":
            return "en"
    return default if default in LOCALES else "en"


class LocaleMiddleware:
    """Sets the request's language; ``?lang=`` also remembers the choice in a cookie."""

    def __init__(self, app: ASGIApp, default: str = "en") -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        query_lang = conn.query_params.get("lang")
        locale = negotiate(query_lang, conn.cookies.get(COOKIE), conn.headers.get("accept-language", ""),
                           self.default)
        token = _current.set(locale)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and query_lang in LOCALES:
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", f"{COOKIE}={locale}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; "
                                             "SameSite=Lax; HttpOnly")
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            _current.reset(token)


def babel_locale() -> Locale:
    """The request's language as a Babel locale (for dates and numbers)."""
    return Locale.parse(_current.get())


def format_datetime(value: dt.datetime | str | None) -> str:
    """A timestamp in the request's language (medium format); empty for None."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return dates.format_datetime(value, format="medium", locale=babel_locale())


def format_date(value: dt.date | str | None) -> str:
    """A date in the request's language (medium format); empty for None."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value[:10])
    return dates.format_date(value, format="medium", locale=babel_locale())


def format_money(amount_minor: int | None, currency_numeric: str | None) -> str:
    """An amount from minor units with its currency, e.g. ``CN¥12.34`` / ``¥12.34``."""
    if amount_minor is None:
        return ""
    alpha, scale = KNOWN_CURRENCIES.get(currency_numeric or "", ("", 2))
    value = Decimal(amount_minor).scaleb(-scale)
    if not alpha:
        return numbers.format_decimal(value, locale=babel_locale())
    return numbers.format_currency(value, alpha, locale=babel_locale())


def format_points(points: int | None) -> str:
    """Points as a whole number with the locale's grouping."""
    return "" if points is None else numbers.format_decimal(points, locale=babel_locale())


def template_globals() -> dict[str, Any]:
    """Helpers every template may call."""
    return {"format_datetime": format_datetime, "format_date": format_date, "format_money": format_money,
            "format_points": format_points, "current_locale": current_locale, "LOCALES": LOCALES,
            "LANGUAGE_NAMES": LANGUAGE_NAMES}
