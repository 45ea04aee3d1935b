-- job.json keep_models: a round whose global model the director removed from
-- disk keeps its row (its sha256, its sample, its metrics) with the time it
-- was pruned; 0 while the model is on disk. The row is marked in the same
-- transaction that decides the pruning and the file is removed after it
-- commits, so a crash between the two leaves a file no row references, which
-- start-up removes.
ALTER TABLE rounds ADD COLUMN pruned_at INTEGER NOT NULL DEFAULT 0;
