-- The server optimizer state (fedavgm, fedadam, fedyogi, fedadagrad) the
-- aggregation that made a round's model wrote next to it: a safetensors
-- file relative to the data dir, '' for an aggregator without state and
-- for round 0. The next aggregation reads it, so a restarted director
-- carries on with the same state.
ALTER TABLE rounds ADD COLUMN state_path TEXT NOT NULL DEFAULT '';
ALTER TABLE rounds ADD COLUMN state_sha256 TEXT NOT NULL DEFAULT '';
