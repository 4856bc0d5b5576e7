-- The platform portal: its users (operators of the platform and of merchants),
-- server-side sessions, login throttling and the audit log of changes.
--
-- Schema `portal` belongs to portal/ (the web application). Passwords are
-- argon2id hashes; a session row is keyed by a keyed hash of the cookie's token,
-- so neither the table nor a backup of it can be replayed as a cookie.

CREATE SCHEMA IF NOT EXISTS portal;

CREATE TABLE portal.users (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login                 text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._@-]{2,63}$'),
    display_name          text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 80),
    password_hash         text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    role                  text NOT NULL CHECK (role IN ('platform_admin', 'platform_operator',
                                                        'merchant_admin', 'merchant_operator')),
    -- A merchant's users belong to exactly one merchant; the platform's to none.
    merchant_id           text REFERENCES loyalty.merchants(merchant_id),
    must_change_password  boolean NOT NULL DEFAULT true,
    disabled              boolean NOT NULL DEFAULT false,
    failed_logins         integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_merchant_by_role CHECK ((role LIKE 'merchant\_%') = (merchant_id IS NOT NULL))
);
CREATE INDEX users_merchant ON portal.users(merchant_id) WHERE merchant_id IS NOT NULL;

CREATE TABLE portal.sessions (
    id_hash              bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id              bigint NOT NULL REFERENCES portal.users(id),
    csrf_token           text NOT NULL CHECK (length(csrf_token) BETWEEN 32 AND 128),
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_seen_at         timestamptz NOT NULL DEFAULT now(),
    expires_idle_at      timestamptz NOT NULL,
    expires_absolute_at  timestamptz NOT NULL
);
CREATE INDEX sessions_user ON portal.sessions(user_id);
CREATE INDEX sessions_expiry ON portal.sessions(expires_absolute_at);

-- Failed logins per client address in a window; an address past the bound is
-- refused until locked_until whatever login it tries.
CREATE TABLE portal.login_throttle (
    client_address     text PRIMARY KEY CHECK (length(client_address) BETWEEN 1 AND 64),
    window_started_at  timestamptz NOT NULL DEFAULT now(),
    failures           integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    locked_until       timestamptz
);

-- Every change made through the portal: who, when, what, on which object, the
-- object before and after. merchant_id scopes an entry to a merchant's users.
CREATE TABLE portal.audit (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL CHECK (length(actor) BETWEEN 1 AND 100),
    user_id       bigint REFERENCES portal.users(id),
    action        text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    object_kind   text NOT NULL CHECK (length(object_kind) BETWEEN 1 AND 32),
    object_id     text NOT NULL CHECK (length(object_id) BETWEEN 1 AND 64),
    merchant_id   text,
    before        jsonb,
    after         jsonb
);
CREATE INDEX audit_at ON portal.audit(at);
CREATE INDEX audit_object ON portal.audit(object_kind, object_id);

-- A merchant's profile as its admin keeps it: a description and contacts.
ALTER TABLE loyalty.merchants
    ADD COLUMN description    text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    ADD COLUMN contact_name   text NOT NULL DEFAULT '' CHECK (length(contact_name) <= 80),
    ADD COLUMN contact_email  text NOT NULL DEFAULT '' CHECK (length(contact_email) <= 120),
    ADD COLUMN contact_phone  text NOT NULL DEFAULT '' CHECK (length(contact_phone) <= 32);
