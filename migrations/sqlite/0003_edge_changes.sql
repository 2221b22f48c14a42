-- The change feed: one row per enrollment, key rotation, revocation, tag
-- change and rename, written in the same transaction as the change. `seq`
-- comes from the one-row counter edge_feed_head, updated as each writing
-- transaction's last statement, so seqs appear in commit order, without gaps.
CREATE TABLE IF NOT EXISTS edge_changes (
    seq       INTEGER PRIMARY KEY NOT NULL,
    node_id   TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('enrolled', 'key_rotated', 'revoked', 'tags', 'renamed')),
    at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS edge_changes_node_seq ON edge_changes (node_id, seq);
CREATE INDEX IF NOT EXISTS edge_changes_at ON edge_changes (at);

CREATE TABLE IF NOT EXISTS edge_feed_head (
    id  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO edge_feed_head (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
