-- Per-envoy state of an experiment, its rounds (the global model each round
-- trains from), the task results envoys sent, and metrics.
CREATE TABLE experiment_envoys (
    experiment_id TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    envoy         TEXT    NOT NULL,
    status        TEXT    NOT NULL, -- assigned, training, reported, finished, failed, aborted
    round         INTEGER NOT NULL DEFAULT 0,
    reason        TEXT    NOT NULL DEFAULT '',
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, envoy)
) STRICT;

CREATE INDEX experiment_envoys_by_envoy ON experiment_envoys (envoy);

-- rounds.round = r holds the global model round r trains from; the row with
-- round = rounds (of the manifest) is the final model.
CREATE TABLE rounds (
    experiment_id TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    round         INTEGER NOT NULL,
    model_path    TEXT    NOT NULL, -- relative to the data dir
    model_sha256  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, round)
) STRICT;

CREATE TABLE task_results (
    experiment_id TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    round         INTEGER NOT NULL,
    envoy         TEXT    NOT NULL,
    data_size     INTEGER NOT NULL,
    result_path   TEXT    NOT NULL, -- relative to the data dir
    received_at   INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, round, envoy)
) STRICT;

CREATE TABLE metrics (
    experiment_id TEXT    NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    round         INTEGER NOT NULL,
    origin        TEXT    NOT NULL, -- an envoy's name, or 'aggregator'
    task          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    value         REAL    NOT NULL,
    time          INTEGER NOT NULL
) STRICT;

CREATE INDEX metrics_by_experiment ON metrics (experiment_id, round);
