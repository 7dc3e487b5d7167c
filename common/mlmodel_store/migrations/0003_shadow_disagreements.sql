-- Sampled predictions on which a shadow model disagreed with the model that answered
-- (docs/rollouts.md): the request and both answers, JSON text cut at a size cap.
CREATE TABLE shadow_disagreements (
    id           TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    model        TEXT NOT NULL,
    model_digest TEXT,
    observed_at  TIMESTAMPTZ NOT NULL,
    path         TEXT NOT NULL,
    request      TEXT,
    served       TEXT,
    shadow       TEXT,
    truncated    BOOLEAN NOT NULL
);

CREATE INDEX shadow_disagreements_by_time ON shadow_disagreements (namespace, model, observed_at);
