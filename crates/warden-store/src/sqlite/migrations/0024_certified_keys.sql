-- The SSH key each grant's certificate certified, and when that certificate ends: the SSH
-- proxy names the grant whose certificate a sign-in offered past its end (its client then offers
-- the key alone) by the one for the key that ended last, found through the index however many
-- requests the user made. A row is written as a grant is stored with its certificate, beside
-- the request, so no request's other writes pay for it; the body is read once, here, for the
-- grants certified before.
-- `IF NOT EXISTS` and `OR IGNORE`: a data dir rewound to an older schema version (tests do) may
-- hold the table already.
CREATE TABLE IF NOT EXISTS certified_keys (
    grant_id TEXT PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
    requester TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    valid_before INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS certified_keys_by_key
    ON certified_keys (requester, fingerprint, valid_before);
INSERT OR IGNORE INTO certified_keys (grant_id, requester, fingerprint, valid_before)
SELECT id, requester, json_extract(body, '$.credential.key_fingerprint'),
       CAST(unixepoch(json_extract(body, '$.expires_at'), 'subsec') * 1000 AS INTEGER)
  FROM requests
 WHERE json_extract(body, '$.credential.key_fingerprint') IS NOT NULL
   AND json_extract(body, '$.expires_at') IS NOT NULL;
