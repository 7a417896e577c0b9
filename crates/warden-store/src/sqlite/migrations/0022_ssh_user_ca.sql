-- The SSH user CA this data dir signs certificates with, recorded at the first start that has
-- it: a start with another CA key (one copied in, or made anew) is refused, whether or not
-- `ssh_user_ca.pub` is still beside it. Hosts trust this CA, and the revocation list names it:
-- with another, certificates it signed could no longer be revoked. `fingerprint` is in the
-- format of the `ca_fingerprint` of issued SSH credentials (`SHA256:` and base64).
CREATE TABLE ssh_user_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL
) STRICT;
