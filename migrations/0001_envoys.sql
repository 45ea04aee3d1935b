-- Envoys: one row per registered data site. Liveness (last_seen) is written in
-- batches by the director; registration and status changes are written at once.
-- Times are Unix nanoseconds (UTC).
CREATE TABLE envoys (
    name               TEXT    PRIMARY KEY,
    description        TEXT    NOT NULL DEFAULT '',
    n_samples          INTEGER NOT NULL DEFAULT 0,
    sample_shape       TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    target_shape       TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    devices            TEXT    NOT NULL DEFAULT '[]', -- JSON, opaque to the store
    registered_at      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    online             INTEGER NOT NULL DEFAULT 1,
    experiment_running INTEGER NOT NULL DEFAULT 0
) STRICT;
