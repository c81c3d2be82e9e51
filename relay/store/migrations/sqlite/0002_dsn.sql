-- DSN requests (RFC 3461) kept with the mail: RET and ENVID per message, NOTIFY and ORCPT per
-- recipient, as the client gave them ('' = not given). Passed to the next hop that offers DSN,
-- and read when the relay writes its own notifications.
ALTER TABLE messages ADD COLUMN dsn_ret TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN dsn_envid TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN dsn_notify TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN dsn_orcpt TEXT NOT NULL DEFAULT '';
