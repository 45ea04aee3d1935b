-- The envoys sampled to train a round (job.json participants_per_round), as
-- a JSON list of names; '' when every participant trains it. Recorded with
-- the round's model, so a restart resumes the same sample and a run can be
-- replayed.
ALTER TABLE rounds ADD COLUMN participants TEXT NOT NULL DEFAULT '';
