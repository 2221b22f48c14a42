-- Enrollment tokens issued to re-enroll one existing node (`replace_node`): the token's jti, the node it may replace, its tenant and expiry; relay-only, so unqualified (schema aegis_relay). Rows may be pruned after exp.
CREATE TABLE IF NOT EXISTS enrollment_token_bindings (
    jti       UUID        PRIMARY KEY,
    node_id   UUID        NOT NULL,
    tenant_id TEXT        NOT NULL,
    exp       TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS enrollment_token_bindings_exp_idx ON enrollment_token_bindings (exp);
