-- The password hash the config file gave each user when the server last read it: a hash
-- changed there since is named at the next start or reload (the config sets a password only
-- for a user who has none, so the change applies to no password by itself).
ALTER TABLE user_secrets ADD COLUMN config_hash TEXT;
