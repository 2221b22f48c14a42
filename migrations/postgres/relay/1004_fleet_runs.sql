-- Fleet run records (relay-only, so unqualified: schema aegis_relay): one row
-- per run, written when it starts and when it ends, and one row per
-- dispatched target, written in batches. `replica` and `generation` name the
-- replica start that runs it: a run whose start has left the cluster is
-- marked `lost` by any replica.
CREATE TABLE IF NOT EXISTS fleet_runs (
    id                UUID        PRIMARY KEY,
    tenant_id         TEXT        NOT NULL,
    created_by        TEXT        NOT NULL,
    tool_name         TEXT        NOT NULL,
    target_json       JSONB       NOT NULL,
    policy_json       JSONB       NOT NULL,
    resolved          UUID[]      NOT NULL DEFAULT '{}',
    replica           TEXT        NOT NULL,
    generation        BIGINT      NOT NULL,
    state             TEXT        NOT NULL CHECK (state IN ('running', 'done', 'cancelled', 'lost')),
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    summary_ok        BIGINT,
    summary_err       BIGINT,
    summary_timed_out BIGINT,
    summary_skipped   BIGINT,
    cancel_reason     TEXT
);
CREATE INDEX IF NOT EXISTS fleet_runs_tenant_started_idx ON fleet_runs (tenant_id, started_at DESC, id);
CREATE INDEX IF NOT EXISTS fleet_runs_started_idx ON fleet_runs (started_at DESC, id);
CREATE INDEX IF NOT EXISTS fleet_runs_running_idx ON fleet_runs (state) WHERE state = 'running';

CREATE TABLE IF NOT EXISTS fleet_run_targets (
    run_id        UUID    NOT NULL REFERENCES fleet_runs (id) ON DELETE CASCADE,
    node_id       UUID    NOT NULL,
    completed     BOOLEAN NOT NULL,
    ok            BOOLEAN,
    exit_code     INTEGER,
    error_kind    TEXT,
    error_message TEXT,
    PRIMARY KEY (run_id, node_id)
);
