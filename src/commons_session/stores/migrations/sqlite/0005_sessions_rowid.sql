-- Sessions become a rowid table with a unique index on id_hash. As a WITHOUT ROWID table keyed
-- by a random hash, every new session landed on a random leaf of a deep b-tree of ~600-byte
-- rows, and its secondary index entries (which carried the 32-byte hash) at random too: at a
-- million sessions each create dirtied pages scattered over the whole file. Now a new row is
-- appended at the end of the table, the index entries carry the small rowid, and only the
-- id_hash index takes a random page. Rows are copied in creation order.
CREATE TABLE sessions_0005 (
    id_hash BLOB NOT NULL,
    user_id TEXT NOT NULL,
    institution_id INTEGER NOT NULL,
    contents TEXT NOT NULL,             -- JSON snapshot of Commons' session keys
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at REAL NOT NULL,           -- absolute end of life
    user_agent TEXT
);
INSERT INTO sessions_0005 (id_hash, user_id, institution_id, contents, created_at, last_seen_at, expires_at, user_agent)
    SELECT id_hash, user_id, institution_id, contents, created_at, last_seen_at, expires_at, user_agent
    FROM sessions ORDER BY created_at;
DROP TABLE sessions;
ALTER TABLE sessions_0005 RENAME TO sessions;
CREATE UNIQUE INDEX sessions_by_id_hash ON sessions (id_hash);
CREATE INDEX sessions_by_institution ON sessions (institution_id);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);
