-- The federation's event stream (api.Event) with a bounded history: the
-- director prunes the oldest rows beyond --event-history. metrics is the
-- JSON of a round's aggregated metrics ('' for other kinds).
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time     INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    job      TEXT    NOT NULL DEFAULT '',
    job_name TEXT    NOT NULL DEFAULT '',
    envoy    TEXT    NOT NULL DEFAULT '',
    round    INTEGER NOT NULL DEFAULT 0,
    message  TEXT    NOT NULL DEFAULT '',
    metrics  TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX events_by_job ON events (job, seq) WHERE job <> '';

-- The audit trail (api.AuditRecord): every admin command and every call of
-- an admin identity on the gRPC port. Append-only: the triggers refuse any
-- change or removal, whoever asks.
CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    caller  TEXT    NOT NULL,
    org     TEXT    NOT NULL DEFAULT '',
    kind    TEXT    NOT NULL DEFAULT '',
    role    TEXT    NOT NULL DEFAULT '',
    remote  TEXT    NOT NULL DEFAULT '',
    channel TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL DEFAULT '',
    outcome TEXT    NOT NULL,
    detail  TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_caller ON audit (caller, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
