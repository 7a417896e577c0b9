-- The notification outbox and break-glass postmortems.

-- One row per notification and sink, written in the transaction of the change that caused it.
-- `due_at` is when delivery is next tried; NULL once delivered.
CREATE TABLE outbox (
    notice_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    due_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (notice_id, sink)
) STRICT;
CREATE INDEX outbox_due ON outbox (due_at) WHERE due_at IS NOT NULL;

-- The follow-up of every break-glass grant (drills included), open until closed.
CREATE TABLE postmortems (
    request_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    role TEXT NOT NULL,
    drill INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    closed_at INTEGER,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX postmortems_open ON postmortems (opened_at) WHERE closed_at IS NULL;
CREATE INDEX postmortems_drills ON postmortems (target, role, opened_at) WHERE drill = 1;
