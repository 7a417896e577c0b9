-- Notices every sink is done with (delivered, or dropped unsent) are counted here, and their
-- outbox rows removed: the outbox holds only what is still on its way, so what reads it at
-- every metrics scrape costs the same after years as on the first day.
CREATE TABLE outbox_settled (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- Sent by at least one sink.
    delivered INTEGER NOT NULL,
    -- Sent by none: dropped unsent everywhere (it no longer applied).
    skipped INTEGER NOT NULL
) STRICT;
INSERT INTO outbox_settled (id, delivered, skipped)
SELECT 1, COUNT(*) FILTER (WHERE sent > 0), COUNT(*) FILTER (WHERE sent = 0)
FROM (SELECT COUNT(*) FILTER (WHERE NOT skipped) AS sent,
             COUNT(*) FILTER (WHERE due_at IS NOT NULL) AS waiting
      FROM outbox GROUP BY notice_id)
WHERE waiting = 0;
DELETE FROM outbox
WHERE notice_id NOT IN (SELECT notice_id FROM outbox WHERE due_at IS NOT NULL);
