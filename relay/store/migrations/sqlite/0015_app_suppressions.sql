-- Suppressions per app: an entry with app '' stops every app's mail (as before apps existed),
-- one with an app's name only that app's. Keyed by (address, scope, app); SQLite can't change a
-- primary key, so the table is rebuilt with every row kept (all of them global).

CREATE TABLE suppressions_v14 (
    address    TEXT NOT NULL,                -- lowercased (or the salted hash of an erased one)
    scope      TEXT NOT NULL DEFAULT 'all',  -- all | broadcast | campaign:<name> | list:<list-id>
    app        TEXT NOT NULL DEFAULT '',     -- '' = every app; else the [[apps]] name it stops
    reason     TEXT NOT NULL,                -- hard-bounce | soft-bounce | complaint | unsubscribe | manual
    detail     TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL,                         -- NULL = permanent
    PRIMARY KEY (address, scope, app)
) WITHOUT ROWID;
INSERT INTO suppressions_v14 (address, scope, app, reason, detail, created_at, expires_at)
    SELECT address, scope, '', reason, detail, created_at, expires_at FROM suppressions;
DROP TABLE suppressions;
ALTER TABLE suppressions_v14 RENAME TO suppressions;
CREATE INDEX suppressions_scope ON suppressions (scope, address);
CREATE INDEX suppressions_app ON suppressions (app, address);
