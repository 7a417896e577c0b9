-- The SSH proxy: public keys users log in to Warden with, and pinned upstream host keys.
CREATE TABLE ssh_keys (
    -- SHA256:… of the key, as `ssh-keygen -l` prints it.
    fingerprint TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    public_key TEXT NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
CREATE INDEX ssh_keys_user ON ssh_keys (user);

-- Host keys an administrator confirmed for ssh targets (`warden target pin-host-key`).
CREATE TABLE ssh_host_keys (
    target TEXT PRIMARY KEY,
    public_key TEXT NOT NULL
) STRICT;
