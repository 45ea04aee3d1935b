-- PostgreSQL's 0004_job_signature.sql (see ../0004_job_signature.sql).
ALTER TABLE experiments ADD COLUMN signature BYTEA;
