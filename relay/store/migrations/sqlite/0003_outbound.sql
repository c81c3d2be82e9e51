-- Events out (schema version 2): one cursor per destination (webhook endpoint or stream) and a
-- log of recent delivery attempts. A cursor only moves forward after the destination's ack.

CREATE TABLE outbound_cursors (
    name            TEXT    PRIMARY KEY,     -- the destination's name in the config
    kind            TEXT    NOT NULL,        -- webhook | nats
    last_id         INTEGER NOT NULL,        -- events up to this id are acknowledged (or filtered out)
    state           TEXT    NOT NULL DEFAULT 'active'
                        CHECK (state IN ('active', 'paused', 'disabled', 'failing')),
    epoch           INTEGER NOT NULL DEFAULT 0,   -- bumped by a replay: an older in-flight ack can't move it
    lease_owner     TEXT    NOT NULL DEFAULT '',  -- the sidecar process serving it
    lease_until     REAL    NOT NULL DEFAULT 0,
    retry_since     REAL,                    -- first failure of the current run (NULL: last try worked)
    last_error      TEXT    NOT NULL DEFAULT '',
    last_error_at   REAL,
    last_success_at REAL,
    sent            INTEGER NOT NULL DEFAULT 0,   -- events acknowledged, in all
    failures        INTEGER NOT NULL DEFAULT 0,   -- failed attempts, in all
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbound_attempts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    at          REAL    NOT NULL,
    first_id    INTEGER NOT NULL,            -- the events tried: ids first_id..last_id
    last_id     INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    acked       INTEGER NOT NULL,            -- how many of them the destination acknowledged
    status      INTEGER NOT NULL DEFAULT 0,  -- HTTP status; 0: none (timeout, refused, broker)
    error       TEXT    NOT NULL DEFAULT '',
    duration_ms REAL    NOT NULL DEFAULT 0
);
CREATE INDEX outbound_attempts_name ON outbound_attempts (name, id);
