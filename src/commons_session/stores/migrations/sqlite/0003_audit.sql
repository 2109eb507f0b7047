-- The audit stream: session and launch events. Sessions appear only as a prefix of the SHA-256
-- of their id; no foreign keys, so events outlive the users and institutions they name.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,                   -- POSIX seconds
    event TEXT NOT NULL,                -- session_created, session_ended, launch, ...
    reason TEXT,                        -- why (logout, expired, ...), or the refusal's code
    user_id TEXT,
    institution_id INTEGER,
    session_hash TEXT,                  -- first 16 hex digits of SHA-256(session id)
    request_id TEXT,                    -- X-Request-ID of the request that caused it
    detail TEXT NOT NULL DEFAULT '{}'   -- JSON extras
);
CREATE INDEX audit_events_by_time ON audit_events (at);
CREATE INDEX audit_events_by_user ON audit_events (user_id, at);
CREATE INDEX audit_events_by_institution ON audit_events (institution_id, at);
