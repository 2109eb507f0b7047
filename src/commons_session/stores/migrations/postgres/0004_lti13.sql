-- LTI 1.3 platform registrations, each attached to an institution (issue 3). Its 1.1 key and
-- secret still sign Canvas' JWTs, so the 1.3 platform and the 1.1 key name the same people.
CREATE TABLE lti13_registrations (
    id BIGSERIAL PRIMARY KEY,
    institution_id BIGINT NOT NULL REFERENCES institutions (id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    deployment_ids JSONB NOT NULL,           -- array of strings
    jwks_url TEXT NOT NULL,
    auth_url TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (issuer, client_id)
);
CREATE INDEX lti13_registrations_by_institution ON lti13_registrations (institution_id);

-- Short-lived values beside the single-use claims: LTI 1.3 login states and the one-time
-- hand-off codes. A claim has no value (NULL).
ALTER TABLE once_claims ADD COLUMN value TEXT;
