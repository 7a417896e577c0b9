-- The metrics count break-glass uses and open postmortems from the postmortems table, which
-- archiving the audit log leaves whole; the index of the events they were counted from before
-- goes, and with it a page written by every break-glass and postmortem event.
DROP INDEX audit_counted;
