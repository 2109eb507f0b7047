-- LTI Dynamic Registration (issue 12): a platform that registered itself has no institution
-- until an operator or a launch with a valid lti1p1 claim binds it. token_url is the
-- platform's OAuth token endpoint; registered_at is set for a platform that registered itself.
ALTER TABLE lti13_registrations ALTER COLUMN institution_id DROP NOT NULL;
ALTER TABLE lti13_registrations ADD COLUMN token_url TEXT;
ALTER TABLE lti13_registrations ADD COLUMN registered_at DOUBLE PRECISION;
