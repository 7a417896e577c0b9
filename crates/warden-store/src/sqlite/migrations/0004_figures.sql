-- Indexes for the figures read at every metrics scrape and by the zero-standing-privilege
-- report, so neither scans whole tables.

-- Requests by state and approval requirement: the grouped count reads only this index. The
-- requirement lives in the body; a virtual column makes it indexable without storing it twice.
ALTER TABLE requests ADD COLUMN requirement TEXT
    GENERATED ALWAYS AS (json_extract(body, '$.requirement')) VIRTUAL;
CREATE INDEX requests_state_requirement ON requests (state, requirement);
-- Requests created in a report's period.
CREATE INDEX requests_created ON requests (created_at);
-- Events of one code (break-glass uses, postmortems, revocations), in log order.
CREATE INDEX audit_code ON audit (code, seq);
-- Failed leases.
CREATE INDEX leases_state ON leases (state);
