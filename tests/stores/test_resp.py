"""The lean Redis client (``stores/resp.py``) against real, throwaway Redis servers: replies in
order over one pipelined connection, the per-command bound (a late reply tears the connection
down and the next command reconnects), recovery after an outage, the NOSCRIPT fallback, AUTH and
the database from the URL, and error replies. Each runs on asyncio's loop and on uvloop's (what
``serve`` runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import redis
import uvloop

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.errors import StoreUnavailable
from commons_session.stores.redis import RedisPy, RedisSessions, connect
from commons_session.stores.resp import LeanRedis, ReplyError, Script, lean_url

from ..backends import RedisServer, free_port, redis_server

T = TypeVar("T")
Run = Callable[[Callable[[], Awaitable[T]]], T]

ECHO = Script("return {KEYS[1], ARGV[1]}")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(body: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await body()

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())

    return run


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
        client.script_flush()
        yield client


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server a test may stop, restart or reconfigure."""
    started = RedisServer(free_port(), tmp_path)
    started.start()
    try:
        yield started
    finally:
        started.stop()


# -- pipelining -----------------------------------------------------------------------------


def test_many_concurrent_commands_share_one_connection_and_each_gets_its_own_reply(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)

    async def body() -> None:
        await asyncio.gather(*(client.execute("SET", f"k{i}", f"v{i}") for i in range(500)))
        replies = await asyncio.gather(*(client.execute("GET", f"k{i}") for i in range(2_000, -1, -1)))
        assert replies == [f"v{i}".encode() if i < 500 else None for i in range(2_000, -1, -1)]
        ids = await asyncio.gather(*(client.execute("CLIENT", "ID") for _ in range(100)))
        assert len(set(ids)) == 1  # one connection carried all of them
        await client.close()

    run(body)


def test_commands_sent_while_others_are_in_flight_go_out_in_one_write(
    run: Run[None], server: RedisServer
) -> None:
    """A lone command is written at once; a burst sent while one is in flight is written once,
    at the end of the loop's turn, in order (one system call for the burst, not one each)."""
    client = LeanRedis(server.url, timeout=5)

    async def body() -> None:
        await client.execute("SET", "burst", b"0")
        conn = client._conn
        assert conn is not None and conn._transport is not None
        writes: list[bytes] = []
        transport = conn._transport

        class Counted:  # uvloop's transport cannot be patched in place
            def write(self, data: bytes) -> None:
                writes.append(bytes(data))
                transport.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(transport, name)

        conn._transport = Counted()  # type: ignore[assignment]
        try:
            # All 51 start in the same turn of the loop: the first finds the connection idle and
            # is written alone, the other 50 are in flight behind it and go out together.
            first = asyncio.ensure_future(client.execute("GET", "burst"))
            burst = [asyncio.ensure_future(client.execute("INCR", "burst")) for _ in range(50)]
            assert await first == b"0"
            assert [await f for f in burst] == list(range(1, 51))
        finally:
            conn._transport = transport
            await client.close()
        assert len(writes) == 2
        assert writes[1].count(b"INCR") == 50

    run(body)


def test_a_pipeline_is_one_round_trip_whose_replies_come_back_in_order(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)

    async def body() -> None:
        replies = await client.pipeline(
            [("SET", "a", b"1"), ("INCRBY", "a", 41), ("GET", "a"), ("HMGET", "nothing", "x", "y")]
        )
        assert replies == [b"OK", 42, b"42", [None, None]]
        assert await client.pipeline([]) == []
        assert await client.pipeline([("GET", "a")]) == [b"42"]
        await client.close()

    run(body)


def test_a_cancelled_caller_leaves_the_replies_of_the_others_in_place(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)
    admin.set("a", "A")
    admin.set("b", "B")

    async def body() -> None:
        first = asyncio.ensure_future(client.execute("GET", "a"))
        second = asyncio.ensure_future(client.execute("GET", "b"))
        await asyncio.sleep(0)  # both written
        first.cancel()
        assert await second == b"B"
        assert await client.execute("GET", "a") == b"A"
        assert first.cancelled()
        await client.close()

    run(body)


def test_closing_while_the_connection_opens_leaves_none_open(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)

    async def body() -> None:
        pending = asyncio.ensure_future(client.execute("PING"))
        await asyncio.sleep(0)  # its connection is being opened
        await client.close()
        await asyncio.gather(pending, return_exceptions=True)

    run(body)
    deadline = time.monotonic() + 2
    while len(admin.client_list()) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [c["name"] for c in admin.client_list()] == [""], "only the admin's own connection is left"


# -- bounds and outages ---------------------------------------------------------------------


def test_a_command_not_answered_in_time_fails_every_pending_command_and_the_next_reconnects(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=0.3)

    async def body() -> None:
        before = await client.execute("CLIENT", "ID")
        start = time.monotonic()
        # BLPOP holds the connection for 2 s; the GET pipelined behind it waits with it.
        blocked = asyncio.gather(
            client.execute("BLPOP", "never", 2), client.execute("GET", "x"), return_exceptions=True
        )
        results = await blocked
        elapsed = time.monotonic() - start
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert 0.25 <= elapsed < 1.0, elapsed
        # A fresh connection, not the one whose replies are now out of step.
        after = await client.execute("CLIENT", "ID")
        assert after != before
        assert await client.execute("ECHO", "still in step") == b"still in step"
        await client.close()

    run(body)


def test_the_deadline_timer_never_fails_commands_that_are_answered_in_time(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    """A busy connection outlives many timeouts: only a late command ends it."""
    client = LeanRedis(server.url, timeout=0.1)

    async def body() -> None:
        first = await client.execute("CLIENT", "ID")
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            await asyncio.gather(*(client.execute("PING") for _ in range(10)))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.25)  # idle past the deadline of the last command
        assert await client.execute("CLIENT", "ID") == first
        await client.close()

    run(body)


def test_a_stopped_server_is_store_unavailable_at_once_and_a_restarted_one_serves_again(
    run: Run[None], own_server: RedisServer
) -> None:
    client = LeanRedis(own_server.url, timeout=2)
    script_ran = ECHO

    async def body() -> None:
        assert await client.script(script_ran, ["k"], ["v"]) == [b"k", b"v"]
        own_server.stop()
        for _ in range(2):  # the open connection is reset, then the reconnect is refused
            start = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await client.execute("PING")
            assert time.monotonic() - start < 1.0
        own_server.start()
        assert await client.execute("PING") == b"PONG"
        # The restarted server has forgotten the script: EVALSHA falls back to EVAL.
        assert await client.script(script_ran, ["k"], ["w"]) == [b"k", b"w"]
        await client.close()

    run(body)


def test_an_unreachable_port_is_store_unavailable(run: Run[None]) -> None:
    client = LeanRedis(f"redis://127.0.0.1:{free_port()}/0", timeout=1)

    async def body() -> None:
        waiting = await asyncio.gather(*(client.execute("PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in waiting), waiting

    run(body)


# -- scripts ----------------------------------------------------------------------------------


def test_scripts_run_by_sha_and_are_sent_again_after_script_flush(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)

    async def body() -> None:
        assert await client.script(ECHO, ["k"], [1]) == [b"k", b"1"]
        assert admin.script_exists(ECHO.sha) == [True]
        admin.script_flush()
        assert await client.script(ECHO, ["k"], [2]) == [b"k", b"2"]
        assert admin.script_exists(ECHO.sha) == [True]
        with pytest.raises(ReplyError) as raised:
            await client.script(Script("return redis.call('NOSUCHCOMMAND')"), [], [])
        assert raised.value.code == "ERR" and "Unknown Redis command" in str(raised.value)
        await client.close()

    run(body)


# -- URL: AUTH and database -------------------------------------------------------------------


def test_password_user_and_database_come_from_the_url(run: Run[None], tmp_path: Path) -> None:
    password, user_password = "p@ss:w/rd", "s3cret%"
    guarded = RedisServer(
        free_port(),
        tmp_path,
        ("--requirepass", password, "--user", "alice", "on", f">{user_password}", "~*", "+@all"),
    )
    guarded.start()
    try:
        base = f"127.0.0.1:{guarded.port}"
        default_user = LeanRedis(f"redis://:{quote(password, safe='')}@{base}/3", timeout=5)
        alice = LeanRedis(f"redis://alice:{quote(user_password, safe='')}@{base}/5", timeout=5)
        wrong = LeanRedis(f"redis://alice:nope@{base}/0", timeout=5)
        anonymous = LeanRedis(f"redis://{base}/0", timeout=5)

        async def body() -> None:
            await default_user.execute("SET", "who", "default")
            await alice.execute("SET", "who", "alice")
            assert await alice.execute("ACL", "WHOAMI") == b"alice"
            assert await default_user.execute("ACL", "WHOAMI") == b"default"
            with pytest.raises(StoreUnavailable):  # AUTH refused: the connection is ended
                await wrong.execute("PING")
            with pytest.raises(ReplyError) as raised:  # no AUTH at all: Redis says NOAUTH
                await anonymous.execute("PING")
            assert raised.value.code == "NOAUTH"
            for client in (default_user, alice, wrong, anonymous):
                await client.close()

        run(body)
        with redis.Redis(port=guarded.port, password=password, db=3) as db3:
            assert db3.get("who") == b"default"
        with redis.Redis(port=guarded.port, password=password, db=5) as db5:
            assert db5.get("who") == b"alice"
    finally:
        guarded.stop()


def test_only_plain_redis_urls_get_the_lean_client() -> None:
    assert lean_url("redis://127.0.0.1:6379/0") and lean_url("redis://:pw@host")
    assert not lean_url("rediss://host:6380/0")
    assert not lean_url("redis+cluster://host:7000")
    assert not lean_url("redis://host:6379/0?socket_keepalive=true")
    assert isinstance(connect("redis://127.0.0.1:6379/0", 1), LeanRedis)
    assert isinstance(connect("rediss://127.0.0.1:6380/0", 1), RedisPy)
    assert isinstance(connect("redis://127.0.0.1:6379/0?health_check_interval=5", 1), RedisPy)
    with pytest.raises(ValueError, match="LeanRedis"):
        LeanRedis("rediss://127.0.0.1:6380/0", 1)


# -- error replies ----------------------------------------------------------------------------


def test_error_replies_raise_and_leave_the_connection_in_step(
    run: Run[None], server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)
    admin.set("text", "a string")

    async def body() -> None:
        first = await client.execute("CLIENT", "ID")
        with pytest.raises(ReplyError) as raised:
            await client.execute("HGET", "text", "field")
        assert raised.value.code == "WRONGTYPE"
        with pytest.raises(ReplyError):  # in a pipeline: raised once every reply is in
            await client.pipeline([("SET", "after", "1"), ("LPUSH", "text", "x"), ("SET", "later", "2")])
        assert await client.execute("MGET", "after", "later") == [b"1", b"2"]
        assert await client.execute("CLIENT", "ID") == first
        await client.close()

    run(body)


def test_a_read_only_replica_is_store_unavailable_not_a_bug(run: Run[None], own_server: RedisServer) -> None:
    with redis.Redis(port=own_server.port) as admin:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that never answers
    client = LeanRedis(own_server.url, timeout=5)

    async def body() -> None:
        assert await client.execute("GET", "k") is None  # reads still work
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await client.execute("SET", "k", "v")
        await client.close()

    run(body)


@pytest.mark.parametrize("driver", ["lean", "redis-py"])
def test_the_session_store_raises_error_replies_on_either_client(
    run: Run[None], server: RedisServer, admin: redis.Redis, driver: str
) -> None:
    """A foreign value under a session's key is a bug to report (500), never 'no session'."""
    id_hash = hash_id(new_session_id())
    admin.set("cs:s:" + id_hash.hex(), "not a hash")

    async def body() -> None:
        if driver == "lean":
            client: Any = LeanRedis(server.url, timeout=5)
        else:
            client = RedisPy(redis.asyncio.Redis.from_url(server.url))
        sessions = RedisSessions(client, idle_timeout=60)
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await sessions.get(id_hash)
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await sessions.touch(id_hash, time.time())
        await client.close()

    run(body)


# -- event loops ------------------------------------------------------------------------------


def test_a_client_built_outside_any_loop_works_in_each_loop_it_is_used_in(
    server: RedisServer, admin: redis.Redis
) -> None:
    client = LeanRedis(server.url, timeout=5)  # as create_app builds the counter: no loop yet

    async def incr() -> Any:
        try:
            return await client.execute("INCR", "n")
        finally:
            await client.close()

    assert asyncio.run(incr()) == 1
    assert asyncio.run(incr()) == 2  # a new loop: a new connection
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(incr()) == 3
        assert runner.run(client.execute("INCR", "n")) == 4  # closing is not the end
        runner.run(client.close())
