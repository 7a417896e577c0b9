-- A lease records when its credential was confirmed gone (`revoked_at` in its body), and the
-- report times revocations by it rather than by audit events, which an archive takes away.
-- Leases revoked before take the time of their first `credential.revoked` event (code 4002)
-- where the log still holds it.
UPDATE leases
SET body = json_set(body, '$.revoked_at', strftime('%Y-%m-%dT%H:%M:%fZ', gone.time / 1000.0, 'unixepoch'))
FROM (
    SELECT request_id, MIN(time) AS time FROM audit
    WHERE code = 4002 AND request_id IS NOT NULL
    GROUP BY request_id
) AS gone
WHERE leases.grant_id = gone.request_id AND leases.state = 'revoked';
