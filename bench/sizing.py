"""How much room sessions take: bytes per session in Redis, and table plus index size per
million sessions in PostgreSQL. Writes real rows through the same layout the stores use.

Usage: .venv/bin/python bench/sizing.py [--sessions 1000000] [--redis-sessions 100000]
Starts a throwaway redis-server on a free loopback port and creates (then drops) a throwaway
database on the PostgreSQL named by COMMONS_SESSION_TEST_POSTGRES_URL (default: the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.backends import ADMIN_URL, postgres_database, redis_server

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import SessionRecord
from commons_session.stores.postgres import PostgresStores
from commons_session.stores.redis import RedisSessions

CONTENTS = {  # a typical snapshot: what a Canvas course launch produces
    "userId": "5f0c2d7e9b6a4c1f8e3d2a1b0c9d8e7f",
    "prefersHighContrast": False,
    "locale": "en",
    "userFullName": "Ada Lovelace",
    "accountName": "Example University",
    "accountId": "1",
    "canvasUserId": "123456",
    "canvasApiDomain": "canvas.example.edu",
    "roles": ["Instructor"],
    "isAdmin": False,
    "canSharePublic": True,
    "canShowPublic": True,
    "showCuratedResourcesFirst": False,
    "showFederalStandards": True,
    "showStateStandards": False,
    "stateStandard": None,
    "isAccountCurator": False,
    "userAvatarUrl": "https://canvas.example.edu/images/thumbnails/123456/avatar.png",
}
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def redis_bytes(count: int) -> dict[str, float]:
    with redis_server() as server:
        client = redis.Redis.from_url(server.url)
        before = int(client.info("memory")["used_memory"])

        async def fill() -> None:
            from redis.asyncio import Redis

            aclient = Redis.from_url(server.url)
            sessions = RedisSessions(aclient, idle_timeout=3600)
            now = time.time()
            users = max(1, count // 3)  # about three sessions per person
            for i in range(count):
                record = SessionRecord(
                    hash_id(new_session_id()),
                    f"user{i % users:08d}",
                    1 + i % 20,
                    CONTENTS,
                    now,
                    now,
                    now + 43_200,
                    AGENT,
                )
                await sessions.create(record)
            await aclient.aclose()

        asyncio.run(fill())
        after = int(client.info("memory")["used_memory"])
        sample = next(iter(client.scan_iter("cs:s:*", count=10)))
        one = int(client.memory_usage(sample) or 0)
        client.close()
    return {
        "sessions": count,
        "total_bytes": after - before,
        "per_session": (after - before) / count,
        "one_session_hash": one,
    }


def postgres_sizes(count: int) -> dict[str, float]:
    with postgres_database(ADMIN_URL) as url:

        async def migrate() -> None:  # the real schema, indexes included
            stores = PostgresStores(url)
            await stores.open()
            await stores.close()

        asyncio.run(migrate())
        now = time.time()
        users = max(1, count // 3)
        buffer = io.StringIO()
        text = json.dumps(CONTENTS)
        for i in range(count):
            buffer.write(
                "\t".join(
                    [
                        "\\\\x" + hash_id(new_session_id()).hex(),
                        f"user{i % users:08d}",
                        str(1 + i % 20),
                        text.replace("\\", "\\\\"),
                        repr(now),
                        repr(now),
                        repr(now + 43_200),
                        AGENT,
                    ]
                )
                + "\n"
            )
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            with conn.cursor().copy(
                "COPY sessions (id_hash, user_id, institution_id, contents, created_at, last_seen_at,"
                " expires_at, user_agent) FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            conn.execute("VACUUM ANALYZE sessions")
            table, indexes, total = conn.execute(
                "SELECT pg_relation_size('sessions') + coalesce(pg_relation_size(reltoastrelid), 0),"
                " pg_indexes_size('sessions'), pg_total_relation_size('sessions')"
                " FROM pg_class WHERE relname = 'sessions'"
            ).fetchone()
        loaded = time.perf_counter() - started
    scale = 1_000_000 / count
    return {
        "sessions": count,
        "load_seconds": loaded,
        "table_bytes_per_million": table * scale,
        "index_bytes_per_million": indexes * scale,
        "total_bytes_per_million": total * scale,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1_000_000, help="PostgreSQL rows")
    parser.add_argument("--redis-sessions", type=int, default=100_000)
    args = parser.parse_args()
    r = redis_bytes(args.redis_sessions)
    p = postgres_sizes(args.sessions)
    mib = 1024 * 1024
    print(
        f"| Redis | {r['sessions']:,} sessions | {r['per_session']:.0f} bytes per session "
        f"(the session hash alone: {r['one_session_hash']} bytes; the rest is the per-user and "
        f"per-institution index sets and the keyspace) |"
    )
    table, indexes, total = (
        p[k] / mib for k in ("table_bytes_per_million", "index_bytes_per_million", "total_bytes_per_million")
    )
    print(
        f"| PostgreSQL | {p['sessions']:,} rows | per million: table {table:.0f} MiB, "
        f"indexes {indexes:.0f} MiB, total {total:.0f} MiB (COPY + VACUUM took {p['load_seconds']:.1f} s) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
