-- AEGIS-compatible edge tables in public, applied only in standalone mode (in shared mode the AEGIS controller owns them).
CREATE TABLE IF NOT EXISTS public.edge_daemons (
    node_id           UUID        PRIMARY KEY,
    tenant_id         TEXT        NOT NULL,
    public_key        BYTEA       NOT NULL,
    capabilities_json JSONB       NOT NULL,
    tags              TEXT[]      NOT NULL DEFAULT '{}',
    status            TEXT        NOT NULL,
    enrolled_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_heartbeat_at TIMESTAMPTZ NULL,
    display_name      TEXT        NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS edge_daemons_tenant_id_idx ON public.edge_daemons (tenant_id);
CREATE INDEX IF NOT EXISTS edge_daemons_tags_idx ON public.edge_daemons USING GIN (tags);

CREATE TABLE IF NOT EXISTS public.enrollment_tokens (
    jti         UUID        PRIMARY KEY,
    tenant_id   TEXT        NOT NULL,
    issued_to   TEXT        NOT NULL,
    exp         TIMESTAMPTZ NOT NULL,
    redeemed_at TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS enrollment_tokens_tenant_id_idx ON public.enrollment_tokens (tenant_id);

CREATE TABLE IF NOT EXISTS public.edge_groups (
    id             UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      TEXT        NOT NULL,
    name           TEXT        NOT NULL,
    selector_json  JSONB       NOT NULL,
    pinned_members UUID[]      NOT NULL DEFAULT '{}',
    created_by     TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (tenant_id, name)
);
