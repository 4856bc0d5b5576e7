-- The points mall: images stored by the platform, redeemable goods, online orders.
--
-- Images: uploaded by merchants (goods, promotions), served by the portal at
-- /media/<id>. Only the bytes' own format decides the type (magic bytes, checked
-- before the row is written); identical bytes are stored once (sha256).
CREATE TABLE portal.images (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    content_type  text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/gif', 'image/webp')),
    size_bytes    integer NOT NULL CHECK (size_bytes > 0 AND size_bytes = octet_length(data)),
    sha256        bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    filename      text NOT NULL DEFAULT '' CHECK (length(filename) <= 200),
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
