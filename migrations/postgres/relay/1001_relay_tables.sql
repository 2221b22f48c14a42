-- Relay-only state (challenges, key history, tombstones); unqualified so it lands in schema aegis_relay via the pool's search_path.
CREATE TABLE IF NOT EXISTS edge_challenges (
    challenge_id      UUID        PRIMARY KEY,
    node_id           UUID        NOT NULL,
    nonce             BYTEA       NOT NULL,
    public_key        BYTEA       NOT NULL,
    role              TEXT        NOT NULL,
    capabilities_json JSONB       NOT NULL,
    grpc_address      TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS edge_challenges_created_at_idx ON edge_challenges (created_at);

CREATE TABLE IF NOT EXISTS edge_key_history (
    node_id        UUID        NOT NULL,
    public_key     BYTEA       NOT NULL,
    replaced_at    TIMESTAMPTZ NOT NULL,
    valid_until    TIMESTAMPTZ NOT NULL,
    rotation_nonce BYTEA       NOT NULL,
    PRIMARY KEY (node_id, rotation_nonce)
);

CREATE TABLE IF NOT EXISTS edge_tombstones (
    node_id    UUID        PRIMARY KEY,
    tenant_id  TEXT        NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    revoked_by TEXT        NOT NULL
);
