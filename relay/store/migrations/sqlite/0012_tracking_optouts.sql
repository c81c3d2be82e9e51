-- Tracking opt-outs: an address ('a@example.org') or a whole domain ('example.org'), lowercase,
-- whose copies get no pixel and no rewritten links and whose hits on earlier tokens record nothing.
CREATE TABLE tracking_optouts (
    target     TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    detail     TEXT NOT NULL DEFAULT ''
);
