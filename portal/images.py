"""Images stored by the platform: checked on upload, kept in ``portal.images``, served at ``/media/{id}``.

An upload is accepted when its first bytes are those of a PNG, JPEG, GIF or WebP
file (the name and the browser's declared type are never believed) and it is at
most ``[portal] image_size_max_bytes``. Identical bytes are stored once (their
sha256 is unique): uploading the same picture twice gives the same id. Images
are public (goods and promotions are shown to members and visitors), immutable
(an edit uploads a new one), so they are served with a year-long cache header.

>>> sniff(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8)), sniff(b"GIF89a..."), sniff(b"<svg>")
('image/png', 'image/gif', None)
"""

from __future__ import annotations

import hashlib
import re

import asyncpg
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.errors import SwitchdError
from portal.web import portal_of

FILENAME_LENGTH_MAX = 200
# A multipart body carries the file and a few form fields besides: this much more is allowed.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
CACHE_CONTROL = "public, max-age=31536000, immutable"
# The pages whose forms upload an image: their POST bodies may be as large as an image
# (plus UPLOAD_OVERHEAD_BYTES); every other request keeps [portal] request_body_max_bytes.
UPLOAD_PATHS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^/mall/goods/(?:new|[0-9]{1,18}/edit)$"),
    re.compile(r"^/promotions/(?:new|[0-9]{1,18}/edit)$"),
)
MEDIA_PREFIX = "/media/"


class ImageError(SwitchdError, ValueError):
    """An upload refused; ``str()`` is one line for the user, ``code`` says why for a page's
    own words: ``empty``, ``too_large`` or ``type``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def sniff(data: bytes) -> str | None:
    """The content type the bytes themselves say, among those accepted; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_upload_path(path: str) -> bool:
    """True for the pages that take an image upload (a larger body limit).

    >>> is_upload_path("/mall/goods/new"), is_upload_path("/mall/goods/7/edit"), is_upload_path("/login")
    (True, True, False)
    """
    return any(p.match(path) for p in UPLOAD_PATHS)


def _clean_filename(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:FILENAME_LENGTH_MAX]


async def store(conn: asyncpg.Connection | asyncpg.Pool, data: bytes, filename: str | None,
                size_max_bytes: int = 512 * 1024) -> int:
    """Store an uploaded image; its id (the same id for the same bytes). ImageError when refused."""
    if not data:
        raise ImageError("empty", "the image is empty")
    if len(data) > size_max_bytes:
        raise ImageError("too_large", f"the image is larger than {size_max_bytes // 1024} KiB")
    content_type = sniff(data)
    if content_type is None:
        raise ImageError("type", "the image must be a PNG, JPEG, GIF or WebP file")
    digest = hashlib.sha256(data).digest()
    image_id = await conn.fetchval(
        "INSERT INTO portal.images (content_type, size_bytes, sha256, filename, data) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256 RETURNING id",
        content_type, len(data), digest, _clean_filename(filename), data)
    return int(image_id)


async def from_form(conn: asyncpg.Connection | asyncpg.Pool, form: FormData | None, name: str,
                    size_max_bytes: int) -> int | None:
    """Store the image uploaded in the form's field ``name``; None when no file was chosen."""
    upload = form.get(name) if form is not None else None
    if not isinstance(upload, UploadFile):
        return None
    data = await upload.read(size_max_bytes + 1)  # one byte more tells "too large"
    if not data and not upload.filename:
        return None  # the field was left empty
    return await store(conn, data, upload.filename, size_max_bytes)


async def media(request: Request) -> Response:
    """``GET /media/{image_id}``: the image's bytes with their type, cached for a year."""
    image_id = request.path_params["image_id"]
    if image_id > 2**63 - 1:
        raise HTTPException(404)
    row = await portal_of(request).pool.fetchrow(
        "SELECT content_type, sha256, data FROM portal.images WHERE id = $1", image_id)
    if row is None:
        raise HTTPException(404)
    etag = '"' + bytes(row["sha256"]).hex()[:32] + '"'
    headers = {"cache-control": CACHE_CONTROL, "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(bytes(row["data"]), media_type=row["content_type"], headers=headers)


ROUTES = [("/media/{image_id:int}", media, ["GET"], "media")]
