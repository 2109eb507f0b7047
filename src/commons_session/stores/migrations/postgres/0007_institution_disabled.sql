-- Operators can disable an institution (issue 13): its launches and new sessions are refused and
-- its live sessions end, without removing its users, launches and acceptances.
ALTER TABLE institutions ADD COLUMN disabled_at DOUBLE PRECISION;
