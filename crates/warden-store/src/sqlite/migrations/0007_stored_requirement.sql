-- The approval requirement becomes a column written with the row. As the virtual column of
-- 0004 it was indexed, so SQLite parsed the whole JSON body on every insert and update of a
-- request to keep the index; the body still holds it, and the two are written together.
DROP INDEX requests_state_requirement;
ALTER TABLE requests DROP COLUMN requirement;
ALTER TABLE requests ADD COLUMN requirement TEXT NOT NULL DEFAULT 'auto';
UPDATE requests SET requirement = json_extract(body, '$.requirement');
CREATE INDEX requests_state_requirement ON requests (state, requirement);
