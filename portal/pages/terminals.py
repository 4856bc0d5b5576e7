"""A merchant's terminals: list, add, view, change the MAC key, disable and enable.

A MAC key comes as an uploaded file (32 hexadecimal digits, or the 16 raw bytes)
or is drawn by the server and shown once, on the answer to the POST that made
it; afterwards every page shows only its check value (KCV). Keys are sealed
under the master key (ledger.terminals, ledger.keys) before they reach the
database; without a master key the portal adds and keys no keyed terminal. No
key is logged, audited or shown again. The platform's admin manages every
merchant's terminals, its operator reads them; a merchant's admin its own.
"""

from __future__ import annotations

import re
import string
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger import keys
from ledger import terminals as ledger_terminals
from ledger.loyalty.merchants import show_merchant
from portal import audit
from portal.i18n import N_
from portal.i18n import gettext as _
from portal.web import FORM, GET, POST, Page, page, redirect, render

TERMINAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,8}$")
KEY_FILE_BYTES_MAX = 1024
KEY_SOURCES = ("none", "generate", "upload")
_HEX = frozenset(string.hexdigits)


class BadKey(ValueError):
    """A key the page refuses; ``str()`` is an English message id for the catalogs."""


def key_from_file(content: bytes, alg: str) -> bytes:
    """The key in an uploaded file: hexadecimal text (whitespace ignored) or the raw bytes.

    >>> key_from_file(b"00112233 44556677 8899aabb ccddeeff\\n", "x919").hex()
    '00112233445566778899aabbccddeeff'
    >>> len(key_from_file(bytes(range(16)), "cmac-aes"))
    16
    """
    if len(content) > KEY_FILE_BYTES_MAX:
        raise BadKey(N_("The key file is too large."))
    try:
        text = "".join(content.decode("ascii").split())
    except UnicodeDecodeError:
        text = ""
    if text and set(text) <= _HEX and len(text) % 2 == 0:
        key = bytes.fromhex(text)
    else:
        key = content
    if not keys.mac_key_length_ok(alg, key):
        raise BadKey(N_("The key file must hold the key as 32 hexadecimal digits (or its 16 bytes)."))
    return key


async def _key_from_form(pg: Page) -> tuple[str | None, bytes | None, bool]:
    """(algorithm, key, generated) from the form's key fields; (None, None, False) for no key."""
    source = pg.field("key_source", 10) or "none"
    if source not in KEY_SOURCES:
        raise BadKey(N_("Choose how the MAC key is given."))
    if source == "none":
        return None, None, False
    alg = pg.field("mac_alg", 10)
    if alg not in keys.MAC_ALGORITHMS:
        raise BadKey(N_("Choose a MAC algorithm."))
    if pg.portal.master_key is None:
        raise BadKey(N_("This portal has no master key, so it cannot seal a MAC key: add the terminal "
                        "without a key, or on the command line of a host that has the master key."))
    if source == "generate":
        return alg, keys.generate_mac_key(alg), True
    upload = pg.form.get("key_file") if pg.form is not None else None
    if not isinstance(upload, UploadFile):
        raise BadKey(N_("Choose the key file to upload."))
    content = await upload.read(KEY_FILE_BYTES_MAX + 1)
    return alg, key_from_file(content, alg), False


async def _terminal_or_404(pg: Page, terminal_id: str) -> dict[str, Any]:
    if not TERMINAL_ID.match(terminal_id):
        raise HTTPException(404)
    found = await ledger_terminals.show_terminal(pg.pool, terminal_id, pg.portal.master_key)
    if found is None:
        raise HTTPException(404)
    pg.require_visible(found["merchant_id"])
    return found


def _audited(t: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a terminal: whether it has a key and its check value, never the key."""
    return {k: t.get(k) for k in ("terminal_id", "merchant_id", "status", "mac_alg", "mac_key", "key_check_value")}


def _form_context(pg: Page, values: dict[str, str], error: str | None, new: bool,
                  terminal: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"values": values, "error": error, "new": new, "t": terminal, "algorithms": keys.MAC_ALGORITHMS,
            "own_merchant": pg.own_merchant(), "master_key": pg.portal.master_key is not None}


@page("terminals")
async def terminal_list(request: Request, pg: Page) -> Response:
    """Terminals in id order (a merchant's users: their own), keyset pages."""
    q = request.query_params
    merchant_id = pg.own_merchant() or (q.get("merchant", "")[:15] or None)
    after = q.get("after", "")[:8] or None
    limit = pg.portal.settings.page_size_default
    rows = await ledger_terminals.list_terminals(pg.pool, limit + 1, merchant_id, after)
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_url = str(request.url.include_query_params(after=rows[-1]["terminal_id"]))
    return render(request, "terminals/list.html", {"terminals": rows, "merchant": merchant_id or "",
                                                   "next_url": next_url}, session=pg.session)


@page("terminal_new", files_max=1)
async def terminal_new(request: Request, pg: Page) -> Response:
    """GET: the form. POST: add the terminal (with a MAC key uploaded, drawn, or none)."""
    values = {"terminal_id": "", "merchant_id": pg.own_merchant() or "", "mac_alg": "cmac-aes",
              "key_source": "generate" if pg.portal.master_key is not None else "none"}
    if request.method == "GET":
        return render(request, "terminals/form.html", _form_context(pg, values, None, True), session=pg.session)
    values.update({k: pg.field(k, 15) for k in ("terminal_id", "merchant_id", "mac_alg", "key_source")})
    if pg.own_merchant() is not None:
        values["merchant_id"] = pg.own_merchant() or ""
    try:
        alg, key, generated = await _key_from_form(pg)
        if await show_merchant(pg.pool, values["merchant_id"][:15]) is None:
            raise BadKey(N_("No such merchant."))
        async with pg.pool.acquire() as conn, conn.transaction():
            await ledger_terminals.add_keyed_terminal(conn, values["terminal_id"], values["merchant_id"], alg, key,
                                                      pg.portal.master_key)
            made = await ledger_terminals.show_terminal(conn, values["terminal_id"], pg.portal.master_key)
            assert made is not None
            await audit.record(conn, pg.actor, pg.session.user_id, "terminal_add", "terminal", made["terminal_id"],
                               made["merchant_id"], None, _audited(made))
    except BadKey as exc:
        return render(request, "terminals/form.html", _form_context(pg, values, _(str(exc)), True),
                      status_code=400, session=pg.session)
    except ledger_terminals.TerminalError as exc:
        return render(request, "terminals/form.html", _form_context(pg, values, str(exc), True),
                      status_code=400, session=pg.session)
    return _after_key(request, pg, made, key if generated else None)


def _after_key(request: Request, pg: Page, terminal: dict[str, Any], drawn: bytes | None) -> Response:
    """A key the server drew is shown on this one answer (never stored in clear, never again)."""
    if drawn is None:
        return redirect(f"/terminals/{terminal['terminal_id']}")
    return render(request, "terminals/key_once.html", {"t": terminal, "key_hex": drawn.hex().upper()},
                  session=pg.session)


@page("terminal_view")
async def terminal_view(request: Request, pg: Page) -> Response:
    """One terminal: merchant, kind, status, sign-on, MAC algorithm and key check value."""
    terminal = await _terminal_or_404(pg, request.path_params["terminal_id"])
    return render(request, "terminals/view.html", {"t": terminal}, session=pg.session)


@page("terminal_edit", files_max=1)
async def terminal_edit(request: Request, pg: Page) -> Response:
    """GET: the form. POST: replace (or remove) the terminal's MAC key; the terminal signs on again."""
    terminal = await _terminal_or_404(pg, request.path_params["terminal_id"])
    values = {"terminal_id": terminal["terminal_id"], "merchant_id": terminal["merchant_id"],
              "mac_alg": terminal["mac_alg"] or "cmac-aes", "key_source": "generate"}
    if terminal["kind"] != "pos":
        raise HTTPException(404)  # a web seat has no key to change
    if request.method == "GET":
        return render(request, "terminals/form.html", _form_context(pg, values, None, False, terminal),
                      session=pg.session)
    values.update({k: pg.field(k, 15) for k in ("mac_alg", "key_source")})
    try:
        alg, key, generated = await _key_from_form(pg)
        async with pg.pool.acquire() as conn, conn.transaction():
            await ledger_terminals.set_key(conn, terminal["terminal_id"], alg, key, pg.portal.master_key)
            after = await ledger_terminals.show_terminal(conn, terminal["terminal_id"], pg.portal.master_key)
            assert after is not None
            await audit.record(conn, pg.actor, pg.session.user_id, "terminal_key", "terminal",
                               terminal["terminal_id"], terminal["merchant_id"], _audited(terminal), _audited(after))
    except BadKey as exc:
        return render(request, "terminals/form.html", _form_context(pg, values, _(str(exc)), False, terminal),
                      status_code=400, session=pg.session)
    except ledger_terminals.TerminalError as exc:
        return render(request, "terminals/form.html", _form_context(pg, values, str(exc), False, terminal),
                      status_code=400, session=pg.session)
    return _after_key(request, pg, after, key if generated else None)


@page("terminal_status")
async def terminal_status(request: Request, pg: Page) -> Response:
    """POST: disable (signs it off) or enable the terminal."""
    terminal = await _terminal_or_404(pg, request.path_params["terminal_id"])
    status = pg.field("status", 10)
    if status not in ledger_terminals.STATUSES:
        raise HTTPException(400)
    async with pg.pool.acquire() as conn, conn.transaction():
        await ledger_terminals.set_status(conn, terminal["terminal_id"], status)
        await audit.record(conn, pg.actor, pg.session.user_id, f"terminal_{status}", "terminal",
                           terminal["terminal_id"], terminal["merchant_id"], {"status": terminal["status"]},
                           {"status": status})
    return redirect(f"/terminals/{terminal['terminal_id']}")


# (path, endpoint, methods, route name): portal/app.py mounts them; portal/permissions.py rules them.
ROUTES: list[tuple[str, Any, list[str], str]] = [
    ("/terminals", terminal_list, GET, "terminals"),
    ("/terminals/new", terminal_new, FORM, "terminal_new"),
    ("/terminals/{terminal_id}", terminal_view, GET, "terminal_view"),
    ("/terminals/{terminal_id}/edit", terminal_edit, FORM, "terminal_edit"),
    ("/terminals/{terminal_id}/status", terminal_status, POST, "terminal_status"),
]
