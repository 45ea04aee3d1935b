-- PostgreSQL's 0005_job_folder.sql (see ../0005_job_folder.sql).
ALTER TABLE experiments ADD COLUMN folder_name TEXT NOT NULL DEFAULT '';
