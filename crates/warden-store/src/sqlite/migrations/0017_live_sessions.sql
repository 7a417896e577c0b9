-- SSH sessions through the proxy that have started and not yet ended, each with its
-- `session.started` event: a session a crash cut short is still here at the next start, which
-- records its end (and its recording's digest).
CREATE TABLE live_sessions (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL
) STRICT;
