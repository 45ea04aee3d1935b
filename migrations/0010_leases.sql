-- Leases on work that one director of several must do at a time (a
-- round's aggregation, the scheduler, the sweeps): the holder owns the
-- work until expires_at (Unix milliseconds) unless it renews the lease.
-- epoch grows by one each time the lease changes hands, so work done under
-- an old epoch can be told from the new holder's.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
