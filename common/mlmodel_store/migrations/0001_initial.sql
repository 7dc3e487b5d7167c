-- Deployments, their rollout history, runtime instances and sampled predictions.
-- Portable SQL: PostgreSQL and SQLite run this file unchanged (no SERIAL, no ::casts, no
-- dollar quoting). Times are written by the application in UTC, never by now().

CREATE TABLE deployments (
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    uid              TEXT NOT NULL,
    generation       BIGINT NOT NULL,
    model_uri        TEXT NOT NULL,
    sha256           TEXT,
    format           TEXT NOT NULL,
    runtime_image    TEXT NOT NULL,
    desired_replicas INTEGER,
    phase            TEXT NOT NULL,
    ready            BOOLEAN NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    deleted_at       TIMESTAMPTZ,
    PRIMARY KEY (namespace, name, uid)
);

-- One row per observed generation of an MLModel: what it asked for, what changed since the
-- previous generation (JSON text), and when it became ready or failed.
CREATE TABLE rollouts (
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    uid              TEXT NOT NULL,
    generation       BIGINT NOT NULL,
    model_uri        TEXT NOT NULL,
    sha256           TEXT,
    format           TEXT NOT NULL,
    runtime_image    TEXT NOT NULL,
    desired_replicas INTEGER,
    changes          TEXT NOT NULL,
    changed_by       TEXT,
    started_at       TIMESTAMPTZ NOT NULL,
    ready_at         TIMESTAMPTZ,
    failed_at        TIMESTAMPTZ,
    reason           TEXT,
    message          TEXT,
    PRIMARY KEY (namespace, name, uid, generation)
);

CREATE INDEX rollouts_by_start ON rollouts (namespace, name, started_at);

-- One row per runtime process: which digest it actually loaded, and when it served.
CREATE TABLE runtime_instances (
    instance_id           TEXT PRIMARY KEY,
    namespace             TEXT NOT NULL,
    model                 TEXT NOT NULL,
    pod_name              TEXT NOT NULL,
    model_digest          TEXT,
    model_version         TEXT,
    load_duration_seconds DOUBLE PRECISION,
    started_at            TIMESTAMPTZ NOT NULL,
    last_seen_at          TIMESTAMPTZ NOT NULL,
    stopped_at            TIMESTAMPTZ
);

CREATE INDEX runtime_instances_by_model ON runtime_instances (namespace, model, started_at);

-- Sampled prediction log (off by default); payloads are JSON text cut at a size cap.
CREATE TABLE predictions (
    id              TEXT PRIMARY KEY,
    request_id      TEXT,
    namespace       TEXT NOT NULL,
    model           TEXT NOT NULL,
    model_digest    TEXT,
    predicted_at    TIMESTAMPTZ NOT NULL,
    latency_seconds DOUBLE PRECISION,
    inputs          TEXT,
    outputs         TEXT,
    truncated       BOOLEAN NOT NULL
);

CREATE INDEX predictions_by_time ON predictions (namespace, model, predicted_at);
