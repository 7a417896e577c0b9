-- One row, written by a readiness check when nothing else has been committed for a while: an
-- idle server proves it can still write before it says it is ready.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
) STRICT;
