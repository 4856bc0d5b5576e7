"""The OpenAPI document against the implementation: the same routes and methods both ways, served
as written, every reference resolved, and the schema checker itself refusing what it should."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from api_support import API, SchemaError, conforms, validate
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)
from starlette.routing import Mount, Route

from portal.api import openapi
from portal.api.problems import TITLES


def _implemented(env: PortalEnv) -> set[tuple[str, str]]:
    mount = next(r for r in env.app.routes if isinstance(r, Mount) and r.path == API)
    out = set()
    for route in mount.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((route.path, method.lower()))
    return out


def test_every_route_is_documented_and_every_documented_route_exists(portal_env: PortalEnv) -> None:
    documented = {(path, method) for path, ops in openapi.PATHS.items() for method in ops}
    assert _implemented(portal_env) == documented


def test_the_portal_has_no_api_route_outside_the_mount(portal_env: PortalEnv) -> None:
    assert not [r for r in portal_env.app.routes if isinstance(r, Route) and r.path.startswith("/api")]


async def test_served_as_written_and_every_reference_resolves(portal_env: PortalEnv) -> None:
    r = conforms(await portal_env.client().get(f"{API}/openapi.json"))
    doc = r.json()
    assert doc == openapi.document() and doc["openapi"].startswith("3.1")
    text = r.text
    for name in re.findall(r'"#/components/schemas/([A-Za-z]+)"', text):
        assert name in openapi.SCHEMAS, name
    for path, ops in openapi.PATHS.items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            # Every operation that needs a token says so and lists 401.
            if op["security"]:
                assert "401" in op["responses"], (path, method)


def test_problem_types_are_documented_in_docs_api() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [kind for kind in TITLES if f"`{kind}`" not in text]
    assert not missing, f"problem types not in docs/api.md: {missing}"


def test_the_checker_refuses_what_it_should() -> None:
    validate({"points": 1, "program": "ALLY"}, openapi.ref("Points"))
    for bad in ({"points": "1", "program": "ALLY"}, {"points": 1}, {"points": 1, "program": "A", "x": 1},
                {"points": True, "program": "ALLY"}, [1]):
        with pytest.raises(SchemaError):
            validate(bad, openapi.ref("Points"))
    with pytest.raises(SchemaError):
        validate({"id": 1, "name": "n", "phone": None, "email": "", "delivery_address": "",
                  "cards": [{"id": 1, "pan": "p", "status": "lost", "expiry": None}]}, openapi.ref("Profile"))
