-- The name of the job folder a FLARE admin client submitted (its
-- `submit_job <folder>`), shown back in FLARE's job meta; '' when the
-- submitter named none (fladmin, OpenFL frontends).
ALTER TABLE experiments ADD COLUMN folder_name TEXT NOT NULL DEFAULT '';
