-- The submitter's signature of a job's archive (pki.JobSignature, JSON), as
-- fladmin sent it; NULL for unsigned jobs. The director only carries it to
-- the envoys, which verify it.
ALTER TABLE experiments ADD COLUMN signature BLOB;
