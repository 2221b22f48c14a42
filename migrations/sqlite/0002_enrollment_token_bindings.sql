-- Enrollment tokens issued to re-enroll one existing node (`replace_node`): the
-- token's jti, the node it may replace, its tenant and expiry (unix ms). Rows
-- may be pruned after exp.
CREATE TABLE IF NOT EXISTS enrollment_token_bindings (
    jti       TEXT PRIMARY KEY NOT NULL,
    node_id   TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    exp       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS enrollment_token_bindings_exp ON enrollment_token_bindings (exp);
