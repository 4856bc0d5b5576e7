"""Terminals over HTTP: add with a key drawn (shown once) or uploaded, then only its check value;
disable and enable; other merchants' terminals not found; no key in any page, log or row in clear."""

from __future__ import annotations

import logging

import pytest
from portal_support import (
    MASTER_KEY,
    PortalEnv,
    csrf_of,
    logged_in,
    portal_env_fixture,  # noqa: F401  (the fixture, by name)
    post_form,
)
from portal_support import test_settings as portal_settings

from ledger import keys
from ledger.terminals import add_terminal, key_aad
from portal.app import create_app
from switch import mac

KEY_HEX = "00112233445566778899AABBCCDDEEFF"


def test_the_ledgers_key_lengths_are_the_switchs() -> None:
    assert keys.MAC_ALGORITHMS == mac.ALGORITHMS
    for alg in keys.MAC_ALGORITHMS:
        for n in range(0, 40):
            assert keys.mac_key_length_ok(alg, bytes(n)) == mac.key_length_ok(alg, bytes(n)), (alg, n)


async def _upload(client, path: str, fields: dict[str, str], content: bytes):  # type: ignore[no-untyped-def]
    page = await client.get(path)
    return await client.post(path, data={"csrf_token": csrf_of(page.text), **fields},
                             files={"key_file": ("key.txt", content, "text/plain")})


async def _demo_terminals(env: PortalEnv) -> None:
    """The demo merchants' POS terminals (the CLI's demo adds them; the ledger's demo does not)."""
    for terminal_id, merchant_id in (("T0000001", "M0001"), ("T0000002", "M0002")):
        await add_terminal(env.pool, terminal_id, merchant_id)


async def _sealed(env: PortalEnv, terminal_id: str) -> tuple[str, bytes]:
    row = await env.pool.fetchrow("SELECT mac_alg, mac_key_sealed FROM switch.terminals WHERE terminal_id = $1",
                                  terminal_id)
    return row["mac_alg"], bytes(row["mac_key_sealed"])


async def test_a_drawn_key_is_shown_once_then_only_its_kcv(portal_env: PortalEnv, caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    client = await logged_in(portal_env, "m0001-admin")
    made = await _upload(client, "/terminals/new", {"terminal_id": "T0000101", "key_source": "generate",
                                                    "mac_alg": "cmac-aes"}, b"")
    assert made.status_code == 200, made.text
    alg, sealed = await _sealed(portal_env, "T0000101")
    key = keys.unseal(MASTER_KEY, sealed, key_aad("T0000101", alg))
    assert key.hex().upper() in made.text and keys.kcv(alg, key) in made.text
    assert key.hex() not in sealed.hex()
    for path in ("/terminals/T0000101", "/terminals", "/terminals/T0000101/edit"):
        page = (await client.get(path)).text
        assert key.hex().upper() not in page and key.hex() not in page, path
    view = (await client.get("/terminals/T0000101")).text
    assert keys.kcv(alg, key) in view
    audit = await portal_env.pool.fetch("SELECT before::text, after::text FROM portal.audit "
                                        "WHERE object_id = 'T0000101'")
    assert audit and all(key.hex() not in str(tuple(r)).lower() for r in audit)
    logged = capsys.readouterr()
    for text in (caplog.text, logged.out, logged.err):
        assert key.hex() not in text.lower()
    row = await portal_env.pool.fetchrow("SELECT merchant_id, kind FROM switch.terminals WHERE terminal_id = $1",
                                         "T0000101")
    assert tuple(row) == ("M0001", "pos")


async def test_an_uploaded_key_and_a_new_key_later(portal_env: PortalEnv) -> None:
    client = await logged_in(portal_env, "m0001-admin")
    made = await _upload(client, "/terminals/new", {"terminal_id": "T0000102", "key_source": "upload",
                                                    "mac_alg": "x919"}, KEY_HEX.encode() + b"\n")
    assert made.status_code == 303 and made.headers["location"] == "/terminals/T0000102"
    view = (await client.get("/terminals/T0000102")).text
    assert "08D7B4" not in view  # (another key's)
    assert keys.kcv("x919", bytes.fromhex(KEY_HEX)) in view and KEY_HEX not in view
    # Replace it with a drawn key; the terminal signs on again.
    changed = await _upload(client, "/terminals/T0000102/edit", {"key_source": "generate", "mac_alg": "x919"}, b"")
    assert changed.status_code == 200
    alg, sealed = await _sealed(portal_env, "T0000102")
    assert keys.unseal(MASTER_KEY, sealed, key_aad("T0000102", alg)) != bytes.fromhex(KEY_HEX)
    for content, words in ((b"abc", "32 hexadecimal"), (b"0" * 2000, "too large")):
        bad = await _upload(client, "/terminals/new", {"terminal_id": "T0000103", "key_source": "upload",
                                                       "mac_alg": "x919"}, content)
        assert bad.status_code == 400 and words in bad.text, bad.text
    dup = await _upload(client, "/terminals/new", {"terminal_id": "T0000102", "key_source": "none"}, b"")
    assert dup.status_code == 400 and "already exists" in dup.text
    web = await _upload(client, "/terminals/new", {"terminal_id": "W0000009", "key_source": "none"}, b"")
    assert web.status_code == 400 and "web trading seats" in web.text
    plain = await _upload(client, "/terminals/new", {"terminal_id": "T0000104", "key_source": "none",
                                                     "merchant_id": "M0002"}, b"")
    assert plain.status_code == 303
    # A merchant's admin adds to its own merchant whatever the form says.
    assert await portal_env.pool.fetchval(
        "SELECT merchant_id FROM switch.terminals WHERE terminal_id = 'T0000104'") == "M0001"


async def test_disable_and_enable(portal_env: PortalEnv) -> None:
    await _demo_terminals(portal_env)
    client = await logged_in(portal_env, "m0001-admin")
    assert "T0000001" in (await client.get("/terminals")).text
    r = await post_form(client, "/terminals/T0000001", "/terminals/T0000001/status", status="disabled")
    assert r.status_code == 303
    assert await portal_env.pool.fetchval("SELECT status FROM switch.terminals WHERE terminal_id = 'T0000001'") \
        == "disabled"
    assert (await post_form(client, "/terminals/T0000001", "/terminals/T0000001/status",
                            status="gone")).status_code == 400
    r = await post_form(client, "/terminals/T0000001", "/terminals/T0000001/status", status="active")
    assert r.status_code == 303


async def test_another_merchants_terminal_is_not_found(portal_env: PortalEnv) -> None:
    await _demo_terminals(portal_env)
    client = await logged_in(portal_env, "m0001-admin")
    listing = (await client.get("/terminals?merchant=M0002")).text
    assert "T0000001" in listing and "T0000002" not in listing
    token = csrf_of(listing)
    for path in ("/terminals/T0000002", "/terminals/T0000002/edit", "/terminals/NOPE", "/terminals/a;b"):
        assert (await client.get(path)).status_code == 404, path
    r = await client.post("/terminals/T0000002/status", data={"csrf_token": token, "status": "disabled"})
    assert r.status_code == 404
    assert await portal_env.pool.fetchval("SELECT status FROM switch.terminals WHERE terminal_id = 'T0000002'") \
        == "active"
    # The merchant's operator has no terminal pages; the platform's operator reads them.
    cashier = await logged_in(portal_env, "m0001-operator")
    assert (await cashier.get("/terminals")).status_code == 403
    platform = await logged_in(portal_env, "operator")
    assert (await platform.get("/terminals/T0000002")).status_code == 200
    assert (await platform.get("/terminals/new")).status_code == 403


async def test_csrf_on_terminal_changes(portal_env: PortalEnv) -> None:
    await _demo_terminals(portal_env)
    client = await logged_in(portal_env, "admin")
    r = await client.post("/terminals/new", data={"terminal_id": "T0000109", "merchant_id": "M0001",
                                                  "key_source": "none"})
    assert r.status_code == 403
    r = await client.post("/terminals/T0000001/status", data={"status": "disabled"})
    assert r.status_code == 403
    made = await _upload(client, "/terminals/new", {"terminal_id": "T0000109", "merchant_id": "M0003",
                                                    "key_source": "none"}, b"")
    assert made.status_code == 303
    nobody = await _upload(client, "/terminals/new", {"terminal_id": "T0000110", "merchant_id": "NOPE",
                                                      "key_source": "none"}, b"")
    assert nobody.status_code == 400 and "No such merchant" in nobody.text


async def test_without_a_master_key_no_keyed_terminal(portal_env: PortalEnv) -> None:
    await _demo_terminals(portal_env)
    app = create_app(portal_settings(), portal_env.pool)
    env = PortalEnv(app, portal_env.pool, portal_env.settings)
    client = await logged_in(env, "m0001-admin")
    form = await client.get("/terminals/new")
    assert "no master key" in form.text
    r = await _upload(client, "/terminals/new", {"terminal_id": "T0000111", "key_source": "generate",
                                                 "mac_alg": "cmac-aes"}, b"")
    assert r.status_code == 400 and "no master key" in r.text
    view = (await client.get("/terminals/T0000001")).text
    assert view.count("<h1") == 1
    # Nor a seat without the ledger's settings: a clear answer, not a 500.
    cashier = await logged_in(env, "m0001-operator")
    page = await cashier.get("/seat")
    r = await cashier.post("/seat", data={"csrf_token": csrf_of(page.text), "request_id": "x" * 20,
                                          "kind": "earn", "pan": "6212340000000019", "amount": "1"})
    assert r.status_code == 503 and "not available" in r.text
