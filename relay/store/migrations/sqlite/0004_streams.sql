-- Message streams (transactional | broadcast), recipient roles (to | cc | bcc) and suppression
-- scopes. Suppressions are keyed by (address, scope): an unsubscribe stops the broadcast stream
-- (or one campaign or list of it) and never transactional mail; bounces and complaints stop all.

ALTER TABLE messages ADD COLUMN stream TEXT NOT NULL DEFAULT 'transactional'
    CHECK (stream IN ('transactional', 'broadcast'));
ALTER TABLE messages ADD COLUMN list_id TEXT NOT NULL DEFAULT '';
-- mail queued before streams existed: what got list headers (tracked mail) was list mail
UPDATE messages SET stream = 'broadcast' WHERE kind = 'mail' AND track <> 'none';

ALTER TABLE deliveries ADD COLUMN role TEXT NOT NULL DEFAULT ''
    CHECK (role IN ('', 'to', 'cc', 'bcc'));

CREATE TABLE suppressions_scoped (
    address    TEXT NOT NULL,                -- lowercased
    scope      TEXT NOT NULL DEFAULT 'all',  -- all | broadcast | campaign:<name> | list:<list-id>
    reason     TEXT NOT NULL,                -- hard-bounce | soft-bounce | complaint | unsubscribe | manual
    detail     TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL,                         -- NULL = permanent
    PRIMARY KEY (address, scope)
) WITHOUT ROWID;
-- stored unsubscribes become broadcast-scoped; everything else keeps stopping every stream
INSERT INTO suppressions_scoped (address, scope, reason, detail, created_at, expires_at)
    SELECT address, CASE WHEN reason = 'unsubscribe' THEN 'broadcast' ELSE 'all' END,
           reason, detail, created_at, expires_at FROM suppressions;
DROP TABLE suppressions;
ALTER TABLE suppressions_scoped RENAME TO suppressions;
CREATE INDEX suppressions_scope ON suppressions (scope, address);
