-- No query reads these two: the audit search filters while it walks the log in `seq` order,
-- and every append paid for both.
DROP INDEX audit_request;
DROP INDEX audit_user;
