-- The SSH key each grant's certificate certified, and when that certificate ends: the SSH
-- proxy names the grant whose certificate a sign-in offered past its end (its client then offers
-- the key alone) by the one for the key that ended last, found through the index however many
-- requests the user made. A row is written as a grant is stored with its certificate, beside
-- the request, so no request's other writes pay for it; the body is read once, here, for the
-- grants certified before.
-- `IF NOT EXISTS` and `OR IGNORE`: a data dir rewound to an older schema version (tests do) may
-- hold the table already.
-- One B-tree, ordered as it is searched: every grant writes a row in the commit that stores
-- it, so a table with its own row ids, a primary key index and a search index would touch three
-- pages where this touches one. No foreign key: requests are never deleted, and its check would
-- read `requests` again at each grant.
CREATE TABLE IF NOT EXISTS certified_keys (
    requester TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    grant_id TEXT NOT NULL,
    PRIMARY KEY (requester, fingerprint, valid_before, grant_id)
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO certified_keys (grant_id, requester, fingerprint, valid_before)
SELECT id, requester, json_extract(body, '$.credential.key_fingerprint'),
       CAST(unixepoch(json_extract(body, '$.expires_at'), 'subsec') * 1000 AS INTEGER)
  FROM requests
 WHERE json_extract(body, '$.credential.key_fingerprint') IS NOT NULL
   AND json_extract(body, '$.expires_at') IS NOT NULL;
