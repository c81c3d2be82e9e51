-- Outpost store (SQLite), schema version 1: the first release. Later versions are the files after
-- this one (relay/store/migrations.py). Times are Unix seconds (REAL).

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    queue_id      TEXT    NOT NULL UNIQUE,
    received_at   REAL    NOT NULL,
    mail_from     TEXT    NOT NULL,          -- envelope sender ('' = null sender)
    client_addr   TEXT    NOT NULL,
    helo          TEXT    NOT NULL DEFAULT '',
    auth_user     TEXT    NOT NULL DEFAULT '',
    size          INTEGER NOT NULL,
    header_message_id TEXT NOT NULL DEFAULT '',
    campaign      TEXT    NOT NULL DEFAULT '',
    tags          TEXT    NOT NULL DEFAULT '[]',  -- JSON list
    track         TEXT    NOT NULL DEFAULT 'all' CHECK (track IN ('all', 'opens', 'clicks', 'none')),
    smtputf8      INTEGER NOT NULL DEFAULT 0,
    body_8bit     INTEGER NOT NULL DEFAULT 0,
    kind          TEXT    NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'dsn')),
    raw           BLOB    NOT NULL           -- the message as accepted (trace, Message-ID, Date added)
);
CREATE INDEX messages_received ON messages (received_at);
CREATE INDEX messages_campaign ON messages (campaign, received_at);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient       TEXT    NOT NULL,
    domain          TEXT    NOT NULL,        -- lowercased recipient domain, for grouping by destination
    state           TEXT    NOT NULL CHECK (state IN
                        ('queued', 'leased', 'deferred', 'delivered', 'bounced', 'expired',
                         'dropped', 'held')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_until     REAL,
    last_class      INTEGER,                 -- 2, 4 or 5
    last_code       INTEGER,
    last_status     TEXT,                    -- enhanced status, e.g. 4.4.1
    last_text       TEXT,
    last_remote     TEXT,
    updated_at      REAL    NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('queued', 'deferred');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'leased';
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_recipient ON deliveries (recipient);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at          REAL    NOT NULL,
    class       INTEGER NOT NULL,
    code        INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    remote      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    at          REAL    NOT NULL,
    type        TEXT    NOT NULL CHECK (type IN
                    ('processed', 'dropped', 'deferred', 'delivered', 'bounced', 'expired',
                     'open', 'click', 'unsubscribe', 'complaint')),
    message_id  INTEGER,                     -- NULL for events that name no message of ours
    delivery_id INTEGER,
    recipient   TEXT    NOT NULL DEFAULT '',
    campaign    TEXT    NOT NULL DEFAULT '',
    details     TEXT    NOT NULL DEFAULT '{}',  -- JSON: remote reply, bounce type, url, ua, ip, ...
    source      TEXT    NOT NULL DEFAULT ''     -- open/click: human | proxy | privacy | scanner
);
CREATE INDEX events_campaign ON events (campaign, type, at, delivery_id);
CREATE INDEX events_message ON events (message_id, at);
CREATE INDEX events_delivery ON events (delivery_id);
CREATE INDEX events_at ON events (at);
-- Tracking stats (sidecar /api/stats): opens and clicks by source, covering for counts and
-- unique counts, so no event row is read. `source` is a column (not a json_extract term): SQLite
-- 3.40 reads the table to re-check an expression a partial index implies.
CREATE INDEX events_source ON events (campaign, type, source, at, delivery_id)
    WHERE type IN ('open', 'click');

CREATE TABLE links (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    url        TEXT    NOT NULL,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;

CREATE TABLE suppressions (
    address    TEXT PRIMARY KEY,             -- lowercased
    reason     TEXT NOT NULL,                -- hard-bounce | soft-bounce | complaint | unsubscribe | manual
    detail     TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    expires_at REAL                          -- NULL = permanent
) WITHOUT ROWID;

CREATE TABLE paused_domains (
    domain    TEXT PRIMARY KEY,              -- '*' pauses everything
    paused_at REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX events_recipient ON events (recipient, type, at);
CREATE INDEX messages_header_message_id ON messages (header_message_id);

-- Provider webhook events already taken in (replays are acknowledged and ignored).
CREATE TABLE webhook_seen (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at  REAL NOT NULL,
    PRIMARY KEY (provider, event_id)
) WITHOUT ROWID;
