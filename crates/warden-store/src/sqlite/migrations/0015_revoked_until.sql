-- The expiry of a request revoked before it ended, in milliseconds: the revocation list that
-- SSH hosts fetch names every such grant whose certificate is still valid, however many grants
-- were revoked since. The partial index holds revoked requests alone, so writing the column
-- costs a grant's commit nothing until it is revoked.
ALTER TABLE requests ADD COLUMN revoked_until INTEGER;
UPDATE requests
   SET revoked_until = CAST(unixepoch(json_extract(body, '$.expires_at'), 'subsec') * 1000 AS INTEGER)
 WHERE state = 'revoked' AND json_extract(body, '$.expires_at') IS NOT NULL;
CREATE INDEX requests_revoked_until ON requests (revoked_until) WHERE revoked_until IS NOT NULL;
