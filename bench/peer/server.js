// The peer: the session layer people commonly use instead of a session service, written the way
// its documentation shows (express + express-session + connect-redis + the redis client), with
// the same two operations the benchmark asks of commons-session:
//
//   GET  /api/session  the session named by the signed `connect.sid` cookie, as JSON (401 if none)
//   POST /api/login    {"jwt_token": "<Canvas JWT>"}: verify the HS256 signature with the
//                      institution's secret and the iat age, regenerate the session, store the
//                      user's session keys, save, answer 201 with the new session as JSON
//   GET  /healthz      the same stack without the session middleware (its ceiling)
//
// It does less than commons-session's POST /api/sessions (no institution, user or terms lookup,
// no single-use claim of the token), which favours the peer. express-session's defaults are kept:
// every read of an unmodified session re-sets its TTL (connect-redis `touch`, an EXPIRE).
//
// Environment: PORT, WORKERS (node:cluster processes, default 1), REDIS_URL, SESSION_SECRET,
// CANVAS_SECRETS (JSON object: consumer key -> shared secret), JWT_MAX_AGE (seconds).
// Run by bench/run.py after `npm install` in this folder.

import cluster from "node:cluster";
import crypto from "node:crypto";

import { RedisStore } from "connect-redis";
import express from "express";
import session from "express-session";
import { createClient } from "redis";

const PORT = Number(process.env.PORT || 3000);
const WORKERS = Number(process.env.WORKERS || 1);
const CANVAS_SECRETS = JSON.parse(process.env.CANVAS_SECRETS || "{}");
const JWT_MAX_AGE = Number(process.env.JWT_MAX_AGE || 300);
const SESSION_MAX_AGE_MS = 3_600_000;

function b64url(buffer) {
  return buffer.toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

// Canvas' JWT: HS256 over the launch parameters plus consumer_key and iat.
function verifyCanvasJwt(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  let claims;
  try {
    claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
  } catch {
    return null;
  }
  const secret = CANVAS_SECRETS[claims && claims.consumer_key];
  if (!secret) return null;
  const expected = Buffer.from(b64url(crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest()));
  const given = Buffer.from(parts[2]);
  if (expected.length !== given.length || !crypto.timingSafeEqual(expected, given)) return null;
  const now = Date.now() / 1000;
  if (typeof claims.iat !== "number" || now - claims.iat > JWT_MAX_AGE || claims.iat > now + 60) return null;
  return claims;
}

function sessionKeys(claims) {
  return {
    userId: claims.user_id,
    prefersHighContrast: false,
    locale: claims.launch_presentation_locale || "en",
    userFullName: claims.lis_person_name_full || null,
    accountName: claims.tool_consumer_instance_name || null,
    accountId: claims.custom_canvas_account_id || null,
    canvasUserId: claims.custom_canvas_user_id || null,
    canvasApiDomain: claims.custom_canvas_api_domain || null,
    roles: String(claims.roles || "").split(",").filter(Boolean),
    isAdmin: false,
    canSharePublic: true,
    canShowPublic: true,
    showCuratedResourcesFirst: false,
    showFederalStandards: true,
    showStateStandards: false,
    stateStandard: null,
    isAccountCurator: false,
    userAvatarUrl: claims.user_image || null,
  };
}

async function serve() {
  const client = createClient({ url: process.env.REDIS_URL });
  client.on("error", (err) => console.error("redis:", err.message));
  await client.connect();

  const sessions = session({
    store: new RedisStore({ client }),
    secret: process.env.SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: "lax", maxAge: SESSION_MAX_AGE_MS },
  });

  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");

  app.get("/healthz", (req, res) => res.json({ status: "ok" }));

  app.get("/api/session", sessions, (req, res) => {
    if (!req.session.user) return res.status(401).json({ error: "no session" });
    res.json({ sid: req.sessionID, expires: req.session.cookie.expires, ...req.session.user });
  });

  app.post("/api/login", express.json({ limit: "64kb" }), sessions, (req, res, next) => {
    const claims = verifyCanvasJwt(req.body && req.body.jwt_token);
    if (!claims) return res.status(401).json({ error: "invalid token" });
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = sessionKeys(claims);
      req.session.save((saveErr) => {
        if (saveErr) return next(saveErr);
        res.status(201).json({ sessionId: req.sessionID, ...req.session.user });
      });
    });
  });

  app.listen(PORT, "127.0.0.1");
}

if (cluster.isPrimary && WORKERS > 1) {
  for (let i = 0; i < WORKERS; i += 1) cluster.fork();
  cluster.on("exit", (worker, code) => {
    if (code !== 0) process.exit(code);
  });
} else {
  serve().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
