-- Warden's SQLite schema: the core tables. Later migrations (0002_…) add to it.
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- When the worker must act: the pending deadline while pending, the expiry while active.
    due_at INTEGER,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX requests_due ON requests (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX requests_requester ON requests (requester, created_at);

CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    code INTEGER NOT NULL,
    user TEXT,
    target TEXT,
    request_id TEXT,
    body TEXT NOT NULL,
    leaf_hash BLOB NOT NULL
) STRICT;
CREATE INDEX audit_request ON audit (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_user ON audit (user, seq);
CREATE INDEX audit_time ON audit (time);

CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    user TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE user_secrets (
    user TEXT PRIMARY KEY,
    password_hash TEXT,
    totp TEXT,
    totp_pending TEXT,
    totp_last_step INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Signed checkpoints of the audit log's Merkle tree. `frontier` holds the right-most perfect
-- subtree roots at `size`, so the next checkpoint resumes without rehashing the whole log.
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    time INTEGER NOT NULL,
    frontier BLOB NOT NULL,
    note TEXT NOT NULL
) STRICT;

-- How far each export sink has delivered the audit log.
CREATE TABLE sink_cursors (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) STRICT;

-- Credentials Warden created at targets, from intent to confirmed removal.
CREATE TABLE leases (
    grant_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at INTEGER,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX leases_due ON leases (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX leases_target ON leases (target, state);

-- Target admin credentials, sealed (AES-256-GCM envelope) by the server: never plaintext.
CREATE TABLE target_credentials (
    target TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
) STRICT;

-- Secrets of issued credentials awaiting their one pickup by the requester, sealed.
CREATE TABLE pickups (
    grant_id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
) STRICT;
