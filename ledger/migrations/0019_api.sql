-- The member API for apps (/api/v1): bearer tokens and Idempotency-Key answers.
--
-- Tokens come in families: a login starts one (an access token and a refresh token);
-- each refresh rotates both, and the refresh token it used is marked used. Showing a
-- used refresh token again means it was copied: the whole family is revoked. Only
-- keyed hashes (HMAC with the portal's secret) of tokens are stored, so a copy of
-- these tables cannot be replayed as tokens.
CREATE TABLE portal.api_token_families (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id             bigint NOT NULL REFERENCES loyalty.members(id),
    -- Logged in with a password that must be changed: the tokens allow only changing it.
    password_change_only  boolean NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- When the member's password was last shown for this family: a password set after it
    -- (portal.member_logins.updated_at, by a merchant's reset or the member elsewhere) ends it.
    password_checked_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at            timestamptz,
    revoked_reason        text CHECK (revoked_reason IN ('logout', 'reuse', 'password', 'sessions_max'))
);
CREATE INDEX api_token_families_member ON portal.api_token_families(member_id) WHERE revoked_at IS NULL;

CREATE TABLE portal.api_tokens (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id    bigint NOT NULL REFERENCES portal.api_token_families(id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('access', 'refresh')),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz  -- a refresh token, once rotated
);
CREATE INDEX api_tokens_family ON portal.api_tokens(family_id);
CREATE INDEX api_tokens_expiry ON portal.api_tokens(expires_at);

-- The first answer to each (member, Idempotency-Key) of a POST that moves value: a repeat
-- with the same request replays it; the same key with another request is refused (409).
-- status NULL: the first request is still being answered.
CREATE TABLE portal.api_idempotency (
    member_id        bigint NOT NULL REFERENCES loyalty.members(id),
    idempotency_key  text NOT NULL CHECK (idempotency_key ~ '^[\x21-\x7e]{1,64}$'),
    request_hash     bytea NOT NULL CHECK (length(request_hash) = 32),
    status           integer CHECK (status BETWEEN 100 AND 599),
    body             bytea CHECK (length(body) <= 65536),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (member_id, idempotency_key)
);
CREATE INDEX api_idempotency_expiry ON portal.api_idempotency(expires_at);
