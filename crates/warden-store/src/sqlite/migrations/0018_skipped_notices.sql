-- A notification dropped unsent because it no longer applied (an approval asked of a request
-- since decided) is done with, like a delivered one, but counted apart: status tells the truth.
ALTER TABLE outbox ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
