-- The archive seals the events of the newest checkpoint made before its cutoff: that
-- checkpoint's time is after every event it covers was stored, so it covers only events older
-- than the cutoff. Checkpoints are found by time here, written once every few seconds at most.
CREATE INDEX checkpoints_time ON checkpoints (time);
-- The audit log's time index served only the archive's cutoff, read once a day, and cost
-- every commit one more index page in its log sync. The audit search never used it: it walks
-- the log in `seq` order.
DROP INDEX audit_time;
