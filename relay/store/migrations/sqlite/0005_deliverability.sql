-- Deliverability: shaping and warm-up hold mail back without an attempt; day counters for
-- warm-up allowances; adaptive shaping state other processes can read; health pauses.

-- Seconds a delivery was held back by shaping, warm-up or a pause: not counted toward
-- maximal_queue_lifetime. `waiting_for` says why it waits now ('' = nothing of ours).
ALTER TABLE deliveries ADD COLUMN shaping_wait REAL NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN waiting_for TEXT NOT NULL DEFAULT '';

-- How many messages a key (e.g. 'warmup:example.com') let through on a UTC day.
CREATE TABLE daily_counts (
    key   TEXT    NOT NULL,
    day   TEXT    NOT NULL,                   -- YYYY-MM-DD
    count INTEGER NOT NULL,
    PRIMARY KEY (key, day)
) WITHOUT ROWID;

-- One row per shaping bucket: the current rate and why it changed (JSON), as the relay saw it.
CREATE TABLE shaping_state (
    bucket     TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- Sending domains or campaigns paused by a health threshold; resumed by an operator (the row
-- stays: outcomes before resumed_at no longer count toward a new pause).
CREATE TABLE sender_pauses (
    scope     TEXT NOT NULL CHECK (scope IN ('domain', 'campaign')),
    value     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    paused_at REAL NOT NULL,
    resumed_at REAL,                           -- NULL: in force; an operator's resume sets it
    PRIMARY KEY (scope, value)
) WITHOUT ROWID;

CREATE INDEX messages_sender ON messages (mail_from);
