-- Pauses become events: a sending domain or campaign paused by the health thresholds records a
-- 'paused' event, an operator's resume a 'resumed' one (details: scope, value, reason), so the
-- feed, webhooks and NATS carry them. SQLite can't alter a CHECK: the table is rebuilt with the
-- same columns, rows (ids kept) and indexes.

CREATE TABLE events_v9 (
    id          INTEGER PRIMARY KEY,
    at          REAL    NOT NULL,
    type        TEXT    NOT NULL CHECK (type IN
                    ('processed', 'dropped', 'deferred', 'delivered', 'bounced', 'expired',
                     'open', 'click', 'unsubscribe', 'complaint', 'paused', 'resumed')),
    message_id  INTEGER,                     -- NULL for events that name no message of ours
    delivery_id INTEGER,
    recipient   TEXT    NOT NULL DEFAULT '',
    campaign    TEXT    NOT NULL DEFAULT '',
    details     TEXT    NOT NULL DEFAULT '{}',  -- JSON: remote reply, bounce type, url, ua, ip, ...
    source      TEXT    NOT NULL DEFAULT ''     -- open/click: human | proxy | privacy | scanner
);
INSERT INTO events_v9 (id, at, type, message_id, delivery_id, recipient, campaign, details, source)
    SELECT id, at, type, message_id, delivery_id, recipient, campaign, details, source FROM events;
DROP TABLE events;
ALTER TABLE events_v9 RENAME TO events;
CREATE INDEX events_campaign ON events (campaign, type, at, delivery_id);
CREATE INDEX events_message ON events (message_id, at);
CREATE INDEX events_delivery ON events (delivery_id);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_source ON events (campaign, type, source, at, delivery_id)
    WHERE type IN ('open', 'click');
CREATE INDEX events_recipient ON events (recipient, type, at);
