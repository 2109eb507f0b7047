"""Redis (standalone or Cluster): sessions and single-use markers for many processes.

Layout (every key has a TTL; nothing scans the keyspace or listens to keyspace events):
- ``cs:s:<sha256 hex>``: a hash per session; its TTL is the session's end (idle or absolute,
  whichever comes first), pushed forward by ``touch``.
- ``cs:i:<institution id>`` and ``cs:u:<user id>``: sets of the institution's and the user's
  session hashes, so they can be listed and ended without a scan. Members may outlive their
  session (they are dropped when found dead); each set expires with its newest session.
- ``cs:o:<namespace>:<key>``: a single-use marker holding its expiry (``RedisOnce.claim``).
- ``cs:v:<namespace>:<key>``: a short-lived value (LTI 1.3 login state, hand-off code), ``SET PXAT``.
- ``cs:rl:<key>``: a rate-limit counter (``RedisCounter``), expiring with its window.

Each operation touches one key atomically (a Lua script or a single command), so the layout works
on a cluster without hash tags; the index set is updated beside it, not atomically with it.

Clients: the stores speak to Redis through ``Commands`` (a command, a pipeline, a script). A
standalone ``redis://`` URL gets ``resp.LeanRedis`` (one pipelined connection per process: the
hot path, see its docstring); ``redis+cluster://`` (slot routing, MOVED), ``rediss://`` and URLs
with options get redis-py behind the same three calls (``RedisPy``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from ..domain.models import SessionRecord
from ..errors import ClaimPending, CreateError, StoreUnavailable, VolatileStore
from .base import OnceStore, RecordStore, SessionStore, Stores
from .counters import Count, HitCounter
from .resp import Arg, LeanRedis, ReplyError, Script, lean_url

__all__ = ["Commands", "RedisCounter", "RedisOnce", "RedisPy", "RedisSessions", "RedisStores", "connect"]

Client = aioredis.Redis | RedisCluster
log = logging.getLogger("commons_session")

_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ReadOnlyError,
    OSError,
)


@contextmanager
def _translated() -> Iterator[None]:
    """redis-py's errors as LeanRedis raises them: ``StoreUnavailable`` or ``ReplyError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable() from exc
    except redis_errors.ResponseError as exc:
        raise ReplyError(str(exc)) from exc


class Commands(Protocol):
    """What the stores need from a Redis client. Replies are RESP2's: bytes, int, None, lists.
    Failures raise ``StoreUnavailable`` (unreachable, timed out, not serving now) or
    ``ReplyError`` (any other error reply)."""

    async def execute(self, *args: Arg) -> Any: ...

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]: ...

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...

    async def close(self) -> None: ...


class RedisPy:
    """``Commands`` on redis-py, for what LeanRedis does not do: Cluster (slot routing, MOVED,
    a pipeline split by node), TLS and URL options."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    async def execute(self, *args: Arg) -> Any:
        with _translated():
            return await self.client.execute_command(*args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        with _translated():
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        registered = self._scripts.get(script.sha)
        if registered is None:  # redis-py's EVALSHA with the fallback to EVAL (and cluster routing)
            registered = self._scripts[script.sha] = self.client.register_script(script.text)
        with _translated():
            return await registered(keys=list(keys), args=list(args))

    async def close(self) -> None:
        await self.client.aclose()


def _commands(client: Commands | Client) -> Commands:
    return RedisPy(client) if isinstance(client, aioredis.Redis | RedisCluster) else client


_CREATE = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'i', ARGV[2], 'c', ARGV[3], 'ca', ARGV[4],
           'ls', ARGV[5], 'ea', ARGV[6], 'ua', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
return 1
""")

# Never recreates a session: a missing key means it ended, and stays ended.
_TOUCH = Script("""
local ea = redis.call('HGET', KEYS[1], 'ea')
if not ea then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[1], 'ls'))
local now = tonumber(ARGV[1])
if now > seen then
  redis.call('HSET', KEYS[1], 'ls', ARGV[1])
  seen = now
end
redis.call('PEXPIREAT', KEYS[1], math.floor(math.min(tonumber(ea), seen + tonumber(ARGV[2])) * 1000))
return 1
""")

_FIELDS = ("u", "i", "c", "ca", "ls", "ea", "ua")


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _ms(ts: float) -> int:
    return max(1, math.ceil(ts * 1000))


class RedisSessions(SessionStore):
    def __init__(self, client: Commands | Client, idle_timeout: float) -> None:
        self.client = _commands(client)
        self.idle_timeout = idle_timeout

    @staticmethod
    def _key(id_hash: bytes) -> str:
        return "cs:s:" + id_hash.hex()

    async def create(self, session: SessionRecord) -> None:
        ends = min(session.expires_at, session.last_seen_at + self.idle_timeout)
        created = await self.client.script(
            _CREATE,
            [self._key(session.id_hash)],
            [
                session.user_id,
                session.institution_id,
                json.dumps(session.contents),
                repr(session.created_at),
                repr(session.last_seen_at),
                repr(session.expires_at),
                session.user_agent or "",
                _ms(ends),
            ],
        )
        if not created:
            raise CreateError("A session with this id already exists.")
        # One round trip for both index sets (a cluster pipeline splits it by node): each
        # command costs the client more CPU than Redis spends on it (docs/performance.md).
        member, expires = session.id_hash.hex(), _ms(session.expires_at)
        commands: list[tuple[Arg, ...]] = []
        for index in (f"cs:i:{session.institution_id}", f"cs:u:{session.user_id}"):
            # NX sets the first TTL, GT only ever pushes it later.
            commands += [
                ("SADD", index, member),
                ("PEXPIREAT", index, expires, "NX"),
                ("PEXPIREAT", index, expires, "GT"),
            ]
        await self.client.pipeline(commands)

    async def get(self, id_hash: bytes) -> SessionRecord | None:
        values = await self.client.execute("HMGET", "cs:s:" + id_hash.hex(), *_FIELDS)
        if values[0] is None:
            return None
        user, institution, contents, created, seen, expires, agent = (_text(v) for v in values)
        return SessionRecord(
            id_hash=id_hash,
            user_id=user,
            institution_id=int(institution),
            contents=orjson.loads(contents),
            created_at=float(created),
            last_seen_at=float(seen),
            expires_at=float(expires),
            user_agent=agent or None,
        )

    async def touch(self, id_hash: bytes, last_seen_at: float) -> bool:
        return bool(
            await self.client.script(_TOUCH, [self._key(id_hash)], [repr(last_seen_at), self.idle_timeout])
        )

    async def delete(self, id_hash: bytes) -> bool:
        return bool(await self.client.execute("DEL", self._key(id_hash)))

    async def _members(self, index: str) -> list[bytes]:
        return sorted(bytes.fromhex(_text(m)) for m in await self.client.execute("SMEMBERS", index))

    async def _delete_all(self, index: str, keep: bytes | None = None) -> int:
        ended = 0
        for id_hash in await self._members(index):
            if id_hash != keep:  # one key at a time: each lives in its own cluster slot
                ended += await self.client.execute("DEL", self._key(id_hash))
                await self.client.execute("SREM", index, id_hash.hex())
        return ended

    async def delete_for_institution(self, institution_id: int) -> int:
        return await self._delete_all(f"cs:i:{institution_id}")

    async def delete_for_user(self, user_id: str, keep: bytes | None = None) -> int:
        return await self._delete_all(f"cs:u:{user_id}", keep)

    async def _list(self, index: str) -> list[SessionRecord]:
        found = []
        for id_hash in await self._members(index):
            record = await self.get(id_hash)
            if record is None:
                await self.client.execute("SREM", index, id_hash.hex())  # its TTL ended it
            else:
                found.append(record)
        return sorted(found, key=lambda r: r.created_at)

    async def list_for_user(self, user_id: str) -> list[SessionRecord]:
        return await self._list(f"cs:u:{user_id}")

    async def list_for_institution(self, institution_id: int) -> list[SessionRecord]:
        return await self._list(f"cs:i:{institution_id}")

    async def purge_expired(self, now: float, idle_timeout: float, limit: int = 1_000) -> int:
        """Redis expires sessions by TTL; there is nothing to purge."""
        return 0


# A claim stands while the caller's ``now`` is before the expiry it holds, exactly as the SQL
# stores compare (``once_claims.expires_at <= now`` is expired), not by Redis' clock: a Redis
# clock ahead of ours, or a TTL rounded to the millisecond, would end a marker before the token
# it guards stopped being accepted. The TTL only collects the key, a margin after its expiry
# (against clocks of service nodes a little apart). A final claim holds "e:<expiry>", a
# provisional one "p:<owner>:<expiry>"; only that owner makes it final or drops it. A marker
# without an expiry (written by ``SET NX`` before these scripts) stands until its own TTL.
# Claiming answers nil (claimed) or the value that stands, so a provisional one is told apart.
_CLAIM = Script("""
local held = redis.call('GET', KEYS[1])
if held then
  local until_ = tonumber(string.match(held, ':([^:]*)$'))
  if until_ == nil or until_ > tonumber(ARGV[2]) then return held end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
elseif held then
  redis.call('DEL', KEYS[1])
end
return false
""")

_CONFIRM = Script("""
local held = redis.call('GET', KEYS[1])
if not held or string.sub(held, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
""")

_RELEASE = Script("""
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")
#: How long a claim's key outlives its expiry, in milliseconds.
CLAIM_TTL_MARGIN_MS = 60_000


class RedisOnce(OnceStore):
    def __init__(self, client: Commands | Client) -> None:
        self.client = _commands(client)

    async def claim(
        self, namespace: str, key: str, expires_at: float, now: float, owner: str | None = None
    ) -> bool:
        ttl = math.ceil((expires_at - now) * 1000) + CLAIM_TTL_MARGIN_MS if expires_at > now else 0
        until = repr(float(expires_at))
        value = f"e:{until}" if owner is None else f"p:{owner}:{until}"
        args: list[Arg] = [value.encode(), repr(float(now)), ttl]
        held = await self.client.script(_CLAIM, [f"cs:o:{namespace}:{key}"], args)
        if held is None:
            return True
        if owner is not None and _text(held).startswith("p:"):
            raise ClaimPending()
        return False

    async def confirm(self, namespace: str, key: str, owner: str, expires_at: float) -> bool:
        args: list[Arg] = [
            f"p:{owner}:".encode(),
            f"e:{float(expires_at)!r}".encode(),
            _ms(expires_at) + CLAIM_TTL_MARGIN_MS,
        ]
        return bool(await self.client.script(_CONFIRM, [f"cs:o:{namespace}:{key}"], args))

    async def put(self, namespace: str, key: str, value: str, expires_at: float) -> None:
        await self.client.execute("SET", f"cs:v:{namespace}:{key}", value.encode(), "PXAT", _ms(expires_at))

    async def get(self, namespace: str, key: str, now: float) -> str | None:
        """Redis drops the key at its expiry; ``now`` is not needed."""
        value = await self.client.execute("GET", f"cs:v:{namespace}:{key}")
        return None if value is None else _text(value)

    async def release(self, namespace: str, key: str, owner: str | None = None) -> None:
        if owner is None:
            await self.client.execute("DEL", f"cs:o:{namespace}:{key}")
        else:
            await self.client.script(_RELEASE, [f"cs:o:{namespace}:{key}"], [f"p:{owner}:".encode()])

    async def purge_expired(self, now: float, limit: int = 1_000) -> int:
        """Markers expire by TTL; there is nothing to purge."""
        return 0


# One key per counter, so it works on a cluster. The window starts with the first hit; a key
# found without a TTL (a crash between INCR and PEXPIRE cannot happen in a script, but an
# operator's SET can) gets one. A negative amount never creates a counter.
_HIT = Script("""
local amount = tonumber(ARGV[2])
if amount < 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {0, tonumber(ARGV[1])} end
local hits = redis.call('INCRBY', KEYS[1], amount)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
""")


class RedisCounter(HitCounter):
    """Rate-limit counters shared by every process using this Redis."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.client = connect(url, timeout)

    async def hit(self, key: str, window: float, amount: int = 1) -> Count:
        hits, ttl_ms = await self.client.script(_HIT, ["cs:rl:" + key], [_ms(window), amount])
        return Count(int(hits), max(1, math.ceil(int(ttl_ms) / 1000)))

    async def close(self) -> None:
        await self.client.close()


POOL_SIZE = 100  # Redis connections per process (per node of a cluster: redis-py's own default)


def connect(url: str, timeout: float) -> Commands:
    """``redis://`` for a standalone server (LeanRedis), ``redis+cluster://`` for a Redis Cluster
    (any one node; redis-py discovers the rest); ``rediss://`` and URL options via redis-py."""
    if lean_url(url):
        return LeanRedis(url, timeout)
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if url.startswith("redis+cluster://"):
        return RedisPy(RedisCluster.from_url("redis://" + url[len("redis+cluster://") :], **options))
    # redis-py's default pool refuses the 101st concurrent command ("Too many connections", a 503
    # under load); this one makes it wait for a free connection, up to the store timeout.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=timeout, **options
    )
    return RedisPy(aioredis.Redis.from_pool(pool))


def _pairs(reply: Any) -> dict[str, str]:
    """``CONFIG GET``'s reply (a flat list from RESP2, a dict from redis-py) or ``INFO``'s (text,
    or redis-py's parsed dict) as one str -> str mapping."""
    if isinstance(reply, dict):
        return {
            _text(k) if isinstance(k, bytes) else str(k): _text(v) if isinstance(v, bytes) else str(v)
            for k, v in reply.items()
        }
    if isinstance(reply, list):
        return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
    found = {}
    for line in _text(reply).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip()] = value.strip()
    return found


async def durability_problems(client: Commands) -> list[str]:
    """Why this Redis could forget a single-use marker (empty: it cannot): no AOF (RDB snapshots
    lose every write since the last one; none at all forgets everything on a restart), or an
    eviction policy other than ``noeviction`` (every marker has a TTL, so even ``volatile-*``
    may drop one under memory pressure). ``CONFIG GET`` first; where a managed Redis disables
    it, ``INFO persistence`` and ``INFO memory``; where both are refused, the answer is unknown
    and counts as a problem. A cluster answers for every primary (``RedisPy.each_primary``)."""
    problems: list[str] = []
    for node in await _each_primary(client):
        try:
            config = _pairs(await node("CONFIG", "GET", "appendonly"))
            config |= _pairs(await node("CONFIG", "GET", "maxmemory-policy"))
            aof, policy = config.get("appendonly", ""), config.get("maxmemory-policy", "")
        except ReplyError:
            try:
                info = _pairs(await node("INFO", "persistence")) | _pairs(await node("INFO", "memory"))
            except ReplyError:
                problems.append("neither CONFIG GET nor INFO is allowed, so its persistence is unknown")
                continue
            aof = "yes" if info.get("aof_enabled") in ("1", "True") else "no"
            policy = info.get("maxmemory_policy", "")
        if aof != "yes":
            problems.append("appendonly is not yes (without AOF a restart forgets used tokens and nonces)")
        if policy != "noeviction":
            problems.append(
                f"maxmemory-policy is {policy or 'unknown'}, not noeviction (eviction drops markers)"
            )
    return sorted(set(problems))


async def _each_primary(client: Commands) -> list[Any]:
    """One command runner per primary: the client itself, or each node of a cluster."""
    cluster = client.client if isinstance(client, RedisPy) else None
    if isinstance(cluster, RedisCluster):
        await cluster.initialize()

        def runner(node: Any) -> Any:
            async def run(*args: Arg) -> Any:
                with _translated():
                    return await cluster.execute_command(*args, target_nodes=node)

            return run

        return [runner(node) for node in cluster.get_primaries()]
    return [client.execute]


class RedisStores(Stores):
    """Sessions and single-use markers; the records come from the database (``CombinedStores``).

    A Redis that can forget a marker (``durability_problems``) makes used tokens and nonces
    replayable after a restart or an eviction, so it is refused (``VolatileStore``) unless
    ``allow_volatile``; then every ``open`` and readiness check logs it and ``warnings()`` says
    it, for ``/readyz``. Checked again at every ``ping``, so a later CONFIG SET is seen too."""

    def __init__(
        self, url: str, *, idle_timeout: float, timeout: float = 2.0, allow_volatile: bool = False
    ) -> None:
        self.client = connect(url, timeout)
        self.allow_volatile = allow_volatile
        self._warnings: list[str] = []
        # Redis never holds durable records; CombinedStores takes them from the database.
        super().__init__(RecordStore(), RedisSessions(self.client, idle_timeout), RedisOnce(self.client))

    async def _check(self) -> None:
        await self.client.execute("PING")
        problems = await durability_problems(self.client)
        if problems and not self.allow_volatile:
            self._warnings = []
            raise VolatileStore(
                "Redis can forget used tokens and nonces: "
                + "; ".join(problems)
                + ". Enable AOF (appendonly yes) and maxmemory-policy noeviction, or set"
                " COMMONS_SESSION_REDIS_ALLOW_VOLATILE=true to accept replays after a restart."
            )
        if problems and problems != self._warnings:
            log.warning("Redis is volatile (allowed by REDIS_ALLOW_VOLATILE): %s", "; ".join(problems))
        self._warnings = ["redis volatile: " + p for p in problems]

    def warnings(self) -> list[str]:
        return list(self._warnings)

    async def open(self) -> None:
        await self._check()

    async def ping(self) -> None:
        await self._check()

    async def close(self) -> None:
        await self.client.close()
