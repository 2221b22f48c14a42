-- Fleet run records (relay-only): one row per run, written when it starts
-- and when it ends, and one row per dispatched target, written in batches.
-- UUIDs as TEXT, times as unix milliseconds, target/policy/resolved as JSON.
-- `replica` and `generation` name the replica start that runs it: a run
-- whose start has left the cluster is marked `lost` by any replica.
CREATE TABLE IF NOT EXISTS fleet_runs (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    tool_name         TEXT NOT NULL,
    target_json       TEXT NOT NULL,
    policy_json       TEXT NOT NULL,
    resolved          TEXT NOT NULL DEFAULT '[]',
    replica           TEXT NOT NULL,
    generation        INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('running', 'done', 'cancelled', 'lost')),
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    summary_ok        INTEGER,
    summary_err       INTEGER,
    summary_timed_out INTEGER,
    summary_skipped   INTEGER,
    cancel_reason     TEXT
);
CREATE INDEX IF NOT EXISTS fleet_runs_tenant_started ON fleet_runs (tenant_id, started_at DESC, id);
CREATE INDEX IF NOT EXISTS fleet_runs_started ON fleet_runs (started_at DESC, id);
CREATE INDEX IF NOT EXISTS fleet_runs_running ON fleet_runs (state) WHERE state = 'running';

CREATE TABLE IF NOT EXISTS fleet_run_targets (
    run_id        TEXT NOT NULL REFERENCES fleet_runs (id) ON DELETE CASCADE,
    node_id       TEXT NOT NULL,
    completed     INTEGER NOT NULL,
    ok            INTEGER,
    exit_code     INTEGER,
    error_kind    TEXT,
    error_message TEXT,
    PRIMARY KEY (run_id, node_id)
);
