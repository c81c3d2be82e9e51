-- Reports (bounces, complaints) that name no delivery of ours: kept for the operator to review
-- (GET /api/reports/unmatched), never turned into events or suppressions unless
-- bounces.suppress_unmatched says so. Times are Unix seconds.
CREATE TABLE unmatched_reports (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('bounced', 'complaint')),
    recipient TEXT NOT NULL,                 -- the address the report names (lowercased)
    details   TEXT NOT NULL DEFAULT '{}'     -- JSON: status, reason, diagnostic, remote, ...
);
CREATE INDEX unmatched_reports_at ON unmatched_reports (at);
