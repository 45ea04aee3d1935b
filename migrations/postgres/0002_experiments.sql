-- PostgreSQL's 0002_experiments.sql (see ../0002_experiments.sql).
CREATE TABLE experiments (
    id             TEXT COLLATE "C" PRIMARY KEY, -- UUID
    name           TEXT COLLATE "C" NOT NULL,
    submitter      TEXT   NOT NULL DEFAULT '',
    submitter_org  TEXT   NOT NULL DEFAULT '',
    submitter_role TEXT   NOT NULL DEFAULT '',
    manifest       TEXT   NOT NULL,    -- job.json as validated, JSON
    status         TEXT COLLATE "C" NOT NULL CHECK (status IN
                       ('pending', 'in_progress', 'finished', 'failed', 'aborted', 'rejected')),
    reason         TEXT   NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    started_at     BIGINT NOT NULL DEFAULT 0,
    finished_at    BIGINT NOT NULL DEFAULT 0,
    archive_path   TEXT   NOT NULL,    -- relative to the data dir
    archive_sha256 TEXT   NOT NULL,
    archive_size   BIGINT NOT NULL
);

CREATE INDEX experiments_by_created ON experiments (created_at);
CREATE INDEX experiments_by_status ON experiments (status);
