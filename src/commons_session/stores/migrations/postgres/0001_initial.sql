-- Institutions are Canvases that registered this tool (consumer key + shared secret).
CREATE TABLE institutions (
    id BIGSERIAL PRIMARY KEY,
    consumer_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,                    -- set only during a rotation
    settings JSONB NOT NULL DEFAULT '{}',    -- AccountSettings
    created_at DOUBLE PRECISION NOT NULL
);

-- A person, as one institution's Canvas names them.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    institution_id BIGINT NOT NULL REFERENCES institutions (id) ON DELETE CASCADE,
    consumer_guid TEXT NOT NULL,
    lti_user_id TEXT NOT NULL,
    profile JSONB NOT NULL,                  -- Profile from the latest launch
    created_at DOUBLE PRECISION NOT NULL,
    last_launch_at DOUBLE PRECISION NOT NULL,
    UNIQUE (institution_id, consumer_guid, lti_user_id)
);

CREATE TABLE launches (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    launched_at DOUBLE PRECISION NOT NULL,
    context JSONB NOT NULL
);
CREATE INDEX launches_by_user ON launches (user_id);

CREATE TABLE terms_acceptances (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    accepted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- Sessions are keyed by SHA-256(id); the id itself is never stored.
CREATE TABLE sessions (
    id_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL,
    institution_id BIGINT NOT NULL,
    contents TEXT NOT NULL,                  -- JSON snapshot of Commons' session keys
    created_at DOUBLE PRECISION NOT NULL,
    last_seen_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,    -- absolute end of life
    user_agent TEXT
);
CREATE INDEX sessions_by_institution ON sessions (institution_id);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);

-- Single-use markers: OAuth nonces and JWTs that already created a session.
CREATE TABLE once_claims (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX once_claims_by_expiry ON once_claims (expires_at);
