-- Experiments (jobs). The archive lives under the data dir; the row points at
-- it only after the file was fsynced and renamed. Times are Unix nanoseconds.
CREATE TABLE experiments (
    id             TEXT    PRIMARY KEY, -- UUID
    name           TEXT    NOT NULL,
    submitter      TEXT    NOT NULL DEFAULT '',
    submitter_org  TEXT    NOT NULL DEFAULT '',
    submitter_role TEXT    NOT NULL DEFAULT '',
    manifest       TEXT    NOT NULL,    -- job.json as validated, JSON
    status         TEXT    NOT NULL CHECK (status IN
                       ('pending', 'in_progress', 'finished', 'failed', 'aborted', 'rejected')),
    reason         TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    started_at     INTEGER NOT NULL DEFAULT 0,
    finished_at    INTEGER NOT NULL DEFAULT 0,
    archive_path   TEXT    NOT NULL,    -- relative to the data dir
    archive_sha256 TEXT    NOT NULL,
    archive_size   INTEGER NOT NULL
) STRICT;

CREATE INDEX experiments_by_created ON experiments (created_at);
CREATE INDEX experiments_by_status ON experiments (status);
