-- Erasure on request: the store's own salt for the hashed suppressions an erased address keeps
-- (relay/store/erasure.py). One row, random, made here once.
CREATE TABLE privacy_salt (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    salt BLOB    NOT NULL
);
INSERT INTO privacy_salt (id, salt) VALUES (1, randomblob(32));
