-- PostgreSQL's 0001_envoys.sql (see ../0001_envoys.sql). Text columns
-- compare byte by byte (COLLATE "C") as SQLite's do, so that orderings and
-- prefix ranges agree with SQLite's whatever the database's locale; flags
-- are 0 or 1 in a BIGINT as in SQLite.
CREATE TABLE envoys (
    name               TEXT COLLATE "C" PRIMARY KEY,
    description        TEXT   NOT NULL DEFAULT '',
    n_samples          BIGINT NOT NULL DEFAULT 0,
    sample_shape       TEXT   NOT NULL DEFAULT '[]', -- JSON array of strings
    target_shape       TEXT   NOT NULL DEFAULT '[]', -- JSON array of strings
    devices            TEXT   NOT NULL DEFAULT '[]', -- JSON, opaque to the store
    registered_at      BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    online             BIGINT NOT NULL DEFAULT 1,
    experiment_running BIGINT NOT NULL DEFAULT 0
);
