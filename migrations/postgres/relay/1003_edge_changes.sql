-- The change feed (relay-only, so unqualified: schema aegis_relay): one row per enrollment, key rotation, revocation, tag change and rename, written in the same transaction as the change. `seq` comes from the one-row counter edge_feed_head, updated as each writing transaction's last statement: its row lock is held until commit, so seqs become visible in commit order, without gaps (a sequence assigned at insert would not be).
CREATE TABLE IF NOT EXISTS edge_changes (
    seq       BIGINT      PRIMARY KEY,
    node_id   UUID        NOT NULL,
    tenant_id TEXT        NOT NULL,
    kind      TEXT        NOT NULL CHECK (kind IN ('enrolled', 'key_rotated', 'revoked', 'tags', 'renamed')),
    at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS edge_changes_node_seq_idx ON edge_changes (node_id, seq);
CREATE INDEX IF NOT EXISTS edge_changes_at_idx ON edge_changes (at);

CREATE TABLE IF NOT EXISTS edge_feed_head (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT   NOT NULL
);

INSERT INTO edge_feed_head (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
