-- The apps' rate limits ([[apps]] rate_limit): per key ('app:<name>') the count of messages
-- accepted in the current fixed window, which starts at window_start (Unix seconds). One row
-- per key: a new window starts the count again.
CREATE TABLE rate_windows (
    key          TEXT    PRIMARY KEY,
    window_start REAL    NOT NULL,
    count        INTEGER NOT NULL
);
