-- Operators can disable a user: launches and new sessions are refused, existing ones end.
ALTER TABLE users ADD COLUMN disabled_at DOUBLE PRECISION;
