-- job.json keep_models. A round whose global model the director removed from
-- disk keeps its row (its sha256, its sample, its metrics) with the time it
-- was pruned; 0 while the model is on disk. The row is marked in the same
-- transaction that decides the pruning and the file is removed after it
-- commits, so a crash between the two leaves a file no row references, which
-- start-up removes.
ALTER TABLE rounds ADD COLUMN pruned_at INTEGER NOT NULL DEFAULT 0;

-- The newest round of the experiment when keep_models was last applied to
-- it. Start-up applies the rule again to an experiment with a newer round: a
-- crash fell between that round's commit and its retention.
ALTER TABLE experiments ADD COLUMN retained_round INTEGER NOT NULL DEFAULT 0;

-- Experiments from before keep_models are not pruned at start-up; one still
-- running applies its rule (the default: the best and the newest model) from
-- its next round on.
UPDATE experiments SET retained_round = COALESCE((SELECT MAX(round) FROM rounds WHERE experiment_id = experiments.id), 0);
