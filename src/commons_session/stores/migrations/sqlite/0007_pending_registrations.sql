-- LTI Dynamic Registration (issue 12): a platform that registered itself has no institution
-- until an operator or a launch with a valid lti1p1 claim binds it, so institution_id becomes
-- nullable (SQLite needs a table rebuild for that). token_url is the platform's OAuth token
-- endpoint; registered_at is set for a platform that registered itself.
CREATE TABLE lti13_registrations_0007 (
    id INTEGER PRIMARY KEY,
    institution_id INTEGER REFERENCES institutions(id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    deployment_ids TEXT NOT NULL,       -- JSON array of strings
    jwks_url TEXT NOT NULL,
    auth_url TEXT NOT NULL,
    created_at REAL NOT NULL,
    token_url TEXT,
    registered_at REAL,
    UNIQUE (issuer, client_id)
);
INSERT INTO lti13_registrations_0007 (id, institution_id, issuer, client_id, deployment_ids, jwks_url, auth_url, created_at)
    SELECT id, institution_id, issuer, client_id, deployment_ids, jwks_url, auth_url, created_at
    FROM lti13_registrations ORDER BY id;
DROP TABLE lti13_registrations;
ALTER TABLE lti13_registrations_0007 RENAME TO lti13_registrations;
CREATE INDEX lti13_registrations_by_institution ON lti13_registrations (institution_id);
