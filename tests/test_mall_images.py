"""Images stored by the platform: magic bytes, size bound, deduplication, served at /media/{id}."""

from __future__ import annotations

import pytest
from portal_support import PortalEnv, portal_env_fixture  # noqa: F401  (the fixture, by name)

from portal import images
from portal.images import ImageError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + bytes(64)
GIF = b"GIF89a" + bytes(64)
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(64)


@pytest.mark.parametrize(("data", "content_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"),
                                                    (GIF, "image/gif"), (WEBP, "image/webp")])
async def test_each_accepted_type_is_stored_and_served(portal_env: PortalEnv, data: bytes,
                                                       content_type: str) -> None:
    image_id = await images.store(portal_env.pool, data, "../../x.bin")
    response = await portal_env.client().get(f"/media/{image_id}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "max-age=31536000" in response.headers["cache-control"]
    assert "img-src 'self'" in response.headers["content-security-policy"]
    again = await portal_env.client().get(f"/media/{image_id}",
                                          headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304
    assert await portal_env.pool.fetchval("SELECT filename FROM portal.images WHERE id = $1", image_id) == "x.bin"


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty"), (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "PNG, JPEG, GIF or WebP"),
    (b"GIF8", "PNG, JPEG, GIF or WebP"), (b"RIFF\x00\x00\x00\x00WAVE", "PNG, JPEG, GIF or WebP"),
    (PNG + bytes(2048), "larger than 1 KiB"),
])
async def test_refusals_store_nothing(portal_env: PortalEnv, data: bytes, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        await images.store(portal_env.pool, data, "a.png", size_max_bytes=1024)
    assert await portal_env.pool.fetchval("SELECT count(*) FROM portal.images") == 0


async def test_same_bytes_same_id_and_unknown_is_404(portal_env: PortalEnv) -> None:
    first = await images.store(portal_env.pool, PNG, "a.png")
    assert await images.store(portal_env.pool, PNG, "b.png") == first
    assert await images.store(portal_env.pool, GIF, "c.gif") != first
    client = portal_env.client()
    assert (await client.get("/media/999999")).status_code == 404
    assert (await client.get("/media/99999999999999999999")).status_code == 404
    assert (await client.get("/media/abc")).status_code == 404
