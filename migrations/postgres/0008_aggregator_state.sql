-- PostgreSQL's 0008_aggregator_state.sql (see ../0008_aggregator_state.sql).
ALTER TABLE rounds ADD COLUMN state_path TEXT NOT NULL DEFAULT '';
ALTER TABLE rounds ADD COLUMN state_sha256 TEXT NOT NULL DEFAULT '';
