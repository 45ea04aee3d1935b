-- PostgreSQL's 0007_round_participants.sql (see ../0007_round_participants.sql).
ALTER TABLE rounds ADD COLUMN participants TEXT NOT NULL DEFAULT '';
