-- The administrator who last set each user's password with `warden user set-password`: NULL
-- when the user's password is one they set themselves, the config's or the bootstrap's. Such
-- an administrator knows the password, so an approval its user gives to that administrator's
-- own request (or the close of a postmortem of that administrator's break-glass grant) is
-- refused: one person would otherwise act as two. Passwords set before this was recorded
-- read as set by no one.
ALTER TABLE user_secrets ADD COLUMN password_set_by TEXT;
