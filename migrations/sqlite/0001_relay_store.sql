-- The embedded store (dev, single-host): the same records as the PostgreSQL
-- backend, in SQLite types: UUIDs and JSON as TEXT, keys as BLOB, times as
-- unix milliseconds (INTEGER), arrays as JSON text.

CREATE TABLE IF NOT EXISTS edge_daemons (
    node_id           TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL,
    public_key        BLOB NOT NULL,
    capabilities_json TEXT NOT NULL,
    tags              TEXT NOT NULL DEFAULT '[]',
    status            TEXT NOT NULL,
    enrolled_at       INTEGER NOT NULL,
    last_heartbeat_at INTEGER,
    display_name      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS edge_daemons_tenant_id ON edge_daemons (tenant_id);

CREATE TABLE IF NOT EXISTS enrollment_tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    issued_to   TEXT NOT NULL,
    exp         INTEGER NOT NULL,
    redeemed_at INTEGER
);
CREATE INDEX IF NOT EXISTS enrollment_tokens_tenant_id ON enrollment_tokens (tenant_id);

CREATE TABLE IF NOT EXISTS edge_groups (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    selector_json  TEXT NOT NULL,
    pinned_members TEXT NOT NULL DEFAULT '[]',
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE IF NOT EXISTS edge_challenges (
    challenge_id      TEXT PRIMARY KEY NOT NULL,
    node_id           TEXT NOT NULL,
    nonce             BLOB NOT NULL,
    public_key        BLOB NOT NULL,
    role              TEXT NOT NULL,
    capabilities_json TEXT NOT NULL,
    grpc_address      TEXT NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS edge_challenges_created_at ON edge_challenges (created_at);

CREATE TABLE IF NOT EXISTS edge_key_history (
    node_id        TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    replaced_at    INTEGER NOT NULL,
    valid_until    INTEGER NOT NULL,
    rotation_nonce BLOB NOT NULL,
    PRIMARY KEY (node_id, rotation_nonce)
);

CREATE TABLE IF NOT EXISTS edge_tombstones (
    node_id    TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    revoked_by TEXT NOT NULL
);
