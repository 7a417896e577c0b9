-- A credential left for its requester's pickup is removed when its grant ends; those of grants
-- that ended before are removed here.
DELETE FROM pickups
 WHERE grant_id IN (SELECT id FROM requests
                     WHERE state NOT IN ('pending', 'approved', 'active'));
