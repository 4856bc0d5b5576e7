"""The legs on a transaction's page: a money leg in its currency (from minor units), a points leg in points."""

from __future__ import annotations

from html.parser import HTMLParser

from portal_support import (
    PortalEnv,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
)
from test_portal_seat import rrn_of, take


class _Tables(HTMLParser):
    """The body rows (cell texts) of every table, by caption."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: str | None = None
        self._in: str | None = None
        self._text = ""
        self._row: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("caption", "td", "th"):
            self._in, self._text = tag, ""
        elif tag == "tr":
            self._row = []

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._caption = self._text.strip()
            self.tables[self._caption] = []
        elif tag == "td":
            self._row.append(self._text.strip())
        elif tag == "tr" and self._row and self._caption is not None:
            self.tables[self._caption].append(self._row)
        if tag in ("caption", "td", "th"):
            self._in = None


def _legs(page: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(purpose, asset) -> (amount, balance after), as the Legs table shows them."""
    parser = _Tables()
    parser.feed(page)
    return {(r[3], r[4]): (r[5], r[6]) for r in parser.tables["Legs"]}


async def test_money_legs_are_shown_with_their_currency(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-operator")
    earn = await take(client, "earn", amount="100.00")
    assert earn.status_code == 200 and "Approved." in earn.text, earn.text
    detail = await client.get(f"/transactions/rrn/{rrn_of(earn.text)}")
    assert detail.status_code == 200
    legs = _legs(detail.text)
    money = {k: v for k, v in legs.items() if k[1] == "CNY"}
    points = {k: v for k, v in legs.items() if k[1].startswith("PTS:")}
    assert money and points, detail.text
    # The fee (M0001 pays 50 basis points: CN¥0.50 of CN¥100.00) moves from clearing to fee income.
    assert money[("fee_income", "CNY")] == ("CN¥0.50", "CN¥0.50"), money
    assert money[("clearing", "CNY")][0] == "-CN¥0.50", money
    assert points[("points", "PTS:ALLY")] == ("100", "100"), points
