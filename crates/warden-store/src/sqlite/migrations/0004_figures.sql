-- Indexes for the figures read at every metrics scrape and by the zero-standing-privilege
-- report, so neither scans whole tables. `IF NOT EXISTS` keeps the migration harmless to
-- apply again.

-- Requests by state and approval requirement: a grouped count reads only this index.
CREATE INDEX IF NOT EXISTS requests_state_tier ON requests (state, json_extract(body, '$.requirement'));
-- Requests created in a report's period.
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at);
-- Events of one code (break-glass uses, postmortems, revocations), in log order.
CREATE INDEX IF NOT EXISTS audit_code ON audit (code, seq);
-- Failed leases.
CREATE INDEX IF NOT EXISTS leases_state ON leases (state);
