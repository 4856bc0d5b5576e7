"""Reading a request body: JSON only, bounded, an object whose fields are declared.

Unknown fields are refused (400 ``invalid-body`` naming them): an app that sends
``adress`` learns of its typo instead of having it ignored.

>>> spec = {"name": Text(80), "points": Int(1, 10**9, required=True)}
>>> check({"points": 5}, spec)
{'points': 5}
>>> check({"points": 5, "colour": "red"}, spec)
Traceback (most recent call last):
...
portal.api.problems.Problem: Unknown field(s): colour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from portal.api.problems import Problem
from portal.security_headers import BodyTooLarge


@dataclass(frozen=True)
class Text:
    """A string of at most ``chars_max`` characters (stripped of surrounding spaces)."""

    chars_max: int
    required: bool = False
    chars_min: int = 0
    strip: bool = True

    def read(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise Problem(400, "invalid-body", f"{name} must be a string.")
        text = value.strip() if self.strip else value
        if not self.chars_min <= len(text) <= self.chars_max:
            raise Problem(400, "invalid-body", f"{name} must be {self.chars_min} to {self.chars_max} characters.")
        return text


@dataclass(frozen=True)
class Int:
    """A whole number (not a boolean, not a float) in ``minimum..maximum``."""

    minimum: int
    maximum: int
    required: bool = False

    def read(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem(400, "invalid-body", f"{name} must be a whole number.")
        if not self.minimum <= value <= self.maximum:
            raise Problem(400, "invalid-body", f"{name} must be from {self.minimum} to {self.maximum}.")
        return value


Field = Text | Int


def check(body: dict[str, Any], spec: Mapping[str, Field]) -> dict[str, Any]:
    """The body's fields read by ``spec``; 400 problem for a missing, unknown or malformed one."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise Problem(400, "invalid-body", f"Unknown field(s): {', '.join(unknown)[:200]}.")
    missing = [name for name, f in spec.items() if f.required and body.get(name) is None]
    if missing:
        raise Problem(400, "invalid-body", f"Missing field(s): {', '.join(missing)}.")
    return {name: spec[name].read(name, value) for name, value in body.items() if value is not None}


async def read_json(request: Request, size_max_bytes: int) -> dict[str, Any]:
    """The request's JSON object; 415 for another media type, 413 past ``size_max_bytes``,
    400 for anything but one JSON object."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise Problem(415, "unsupported-media-type", "Send the body as application/json.")
    chunks: list[bytes] = []
    seen = 0
    too_large = Problem(413, "body-too-large", f"The body may be at most {size_max_bytes} bytes.")
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > size_max_bytes:
                raise too_large
            chunks.append(chunk)
    except BodyTooLarge:  # the portal's own bound, when it is the smaller one
        raise too_large from None
    try:
        value = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "invalid-body", "The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise Problem(400, "invalid-body", "The body must be a JSON object.")
    return value
