"""Shared by the member API tests: members with passwords, logging in, and checking answers
against the OpenAPI document's schemas.

The schemas are checked by a small validator of our own (``validate``) rather than
the jsonschema package: the document uses a handful of JSON Schema keywords (type,
properties, required, additionalProperties, items, enum, const, oneOf, $ref), the
check is twenty lines, and the product gains no dependency for its tests.
"""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import httpx
from portal_support import PortalEnv

from ledger.loyalty import card_numbers, demo, seat
from ledger.loyalty.outcomes import Reason
from portal.api import openapi
from portal.passwords import hash_password

API = "/api/v1"
MEMBER_PASSWORD = "member pass 1234"
PAN1, PAN2, PAN3 = demo.demo_pan(1), demo.demo_pan(2), demo.demo_pan(3)
_forms = itertools.count(1)
_HASH = hash_password(MEMBER_PASSWORD)  # once: argon2id costs tens of milliseconds on purpose


async def member_of(pool: asyncpg.Pool, pan: str) -> int:
    """The member id holding the card ``pan``."""
    return int(await pool.fetchval("SELECT member_id FROM loyalty.cards WHERE id = $1",
        await card_numbers.card_id_by_number(pool, pan)))


async def give_password(pool: asyncpg.Pool, pan: str, must_change: bool = False) -> int:
    """Give the member of ``pan`` the test password; returns the member id."""
    member_id = await member_of(pool, pan)
    await pool.execute(
        "INSERT INTO portal.member_logins(member_id, password_hash, must_change_password) VALUES ($1, $2, $3) "
        "ON CONFLICT (member_id) DO UPDATE SET password_hash = $2, must_change_password = $3",
        member_id, _HASH, must_change)
    return member_id


async def log_in(client: httpx.AsyncClient, login: str, password: str = MEMBER_PASSWORD) -> dict[str, Any]:
    """POST /sessions; the tokens (asserts 201)."""
    response = await client.post(f"{API}/sessions", json={"login": login, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def auth(tokens: dict[str, Any]) -> dict[str, str]:
    """The Authorization header for a login's access token."""
    return {"authorization": f"Bearer {tokens['access_token']}"}


async def member_client(env: PortalEnv, pan: str, address: str = "10.0.0.1") -> tuple[httpx.AsyncClient, int]:
    """A client logged in (its Authorization header set) as the member of ``pan``, and the member id."""
    member_id = await give_password(env.pool, pan)
    client = env.client(address)
    client.headers.update(auth(await log_in(client, pan)))
    return client, member_id


async def take(env: PortalEnv, merchant: str, kind: str, pan: str, amount: int) -> None:
    """A transaction at ``merchant``'s web trading seat (approved, or the test fails)."""
    loyalty = env.app.state.portal.loyalty
    result = await seat.take(loyalty, merchant, "op-test", f"form-{next(_forms):06d}-{seat.new_request_id()[:8]}",
                             kind, pan, amount)
    assert result.reason is Reason.APPROVED, result


# ------------------------------------------------------------------ the schemas


class SchemaError(AssertionError):
    """An answer that its schema refuses; ``str()`` says where."""


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi.SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Raise SchemaError unless ``value`` satisfies ``schema`` (the keywords the document uses)."""
    schema = _resolve(schema)
    kinds = schema.get("type")
    if kinds is not None and not any(_is(value, k) for k in ([kinds] if isinstance(kinds, str) else kinds)):
        raise SchemaError(f"{where}: {value!r} is not of type {kinds}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{where}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} is not one of {schema['enum']}")
    if "oneOf" in schema:
        passed = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, where)
                passed += 1
            except SchemaError:
                pass
        if passed != 1:
            raise SchemaError(f"{where}: {value!r} matches {passed} of oneOf, not exactly one")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{where}: missing {name}")
        for name, item in value.items():
            if name in props:
                validate(item, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                raise SchemaError(f"{where}: unexpected {name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


def _operation(method: str, path: str) -> dict[str, Any]:
    """The document's operation for a concrete path (``/orders/12`` finds ``/orders/{id}``)."""
    parts = path.split("?")[0].removeprefix(API).split("/")
    for template, ops in openapi.PATHS.items():
        t_parts = template.split("/")
        if len(t_parts) == len(parts) and all(t == p or t.startswith("{") for t, p in zip(t_parts, parts,
                                                                                       strict=True)):
            if method.lower() in ops:
                return ops[method.lower()]
    raise SchemaError(f"{method} {path} is not in the OpenAPI document")


def conforms(response: httpx.Response) -> httpx.Response:
    """Check an answer against the document (its status is listed, its body fits); returns it."""
    op = _operation(response.request.method, response.request.url.path)
    listed = op["responses"].get(str(response.status_code))
    if listed is None:
        raise SchemaError(f"{response.request.method} {response.request.url.path}: status "
                          f"{response.status_code} is not in the document")
    content = listed.get("content")
    if content is None:
        assert not response.content, "a response the document gives no body has one"
        return response
    media = response.headers["content-type"].split(";")[0]
    if media not in content:
        raise SchemaError(f"{response.request.url.path}: {media} is not a documented media type")
    schema = content[media].get("schema")
    if schema is not None:
        validate(response.json(), schema)
    return response
