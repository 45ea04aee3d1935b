-- PostgreSQL's 0009_model_retention.sql (see ../0009_model_retention.sql).
ALTER TABLE rounds ADD COLUMN pruned_at BIGINT NOT NULL DEFAULT 0;

ALTER TABLE experiments ADD COLUMN retained_round BIGINT NOT NULL DEFAULT 0;

UPDATE experiments SET retained_round = COALESCE((SELECT MAX(round) FROM rounds WHERE experiment_id = experiments.id), 0);
