-- The metrics count the events of three codes (break-glass uses, postmortems opened and
-- closed), a few in every thousand. Indexing every event by its code made each grant write
-- four more index pages, one per code it logs; the index now holds only the counted codes.
-- Queries repeat the condition (`COUNTED_CODES` in figures.rs) so SQLite can use the index.
-- A range, not an `IN` list: every insert checks the condition, and a list would be built
-- into a temporary table for each.
DROP INDEX audit_code;
CREATE INDEX audit_counted ON audit (code, seq) WHERE code BETWEEN 2100 AND 2102;
