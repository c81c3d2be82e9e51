-- Apps as tenants ([[apps]]): every message records the app it belongs to ('' = mail of no
-- app); its deliveries and events reach the app through the message. And the HTTP send door's
-- Idempotency-Key answers, per app.

ALTER TABLE messages ADD COLUMN app TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_app ON messages (app, received_at);

-- status 0 = the first request is still being answered; body = the JSON answer given
CREATE TABLE idempotency_keys (
    app        TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    status     INTEGER NOT NULL DEFAULT 0,
    body       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (app, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
