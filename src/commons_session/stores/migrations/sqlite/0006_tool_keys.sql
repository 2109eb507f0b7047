-- The tool's own RSA signing keys (issue 12: LTI Deep Linking responses are signed by us). The
-- newest key with no retired_at signs; a retired key stays in the JWKS until published_until.
CREATE TABLE tool_keys (
    kid TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,          -- PKCS#8 PEM; never leaves the store but to sign
    public_jwk TEXT NOT NULL,           -- JSON object: kty, n, e, kid, alg, use
    created_at REAL NOT NULL,
    retired_at REAL,
    published_until REAL
);
CREATE INDEX tool_keys_by_created ON tool_keys (created_at);
