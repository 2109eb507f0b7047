"""Store outages: requests that need an unreachable store fail closed with 503 `store_unavailable`
(problem+json, Retry-After) within about ``store_timeout`` -- never a 200 from stale data, never a
401 that would make a client throw away a good session -- and the service recovers by itself when
the store returns, without a restart.

Each test stops or freezes a backend of its own (a Redis server or a whole PostgreSQL server), so
nothing here touches the shared fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis as redis_py

from .backends import PostgresServer, RedisServer, postgres_server, redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, create_session, launch, onboard, start_server

STORE_TIMEOUT = 1  # seconds, COMMONS_SESSION_STORE_TIMEOUT of every server here
BOUND = 3.0  # store_timeout plus generous slack: the longest a refused request may take


# -- helpers --------------------------------------------------------------------------------


def timed(method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = httpx.request(method, url, timeout=15, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - start


def assert_unavailable(response: httpx.Response, elapsed: float, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    assert response.json()["code"] == "store_unavailable", what
    assert int(response.headers["retry-after"]) >= 1, what
    assert elapsed < BOUND, f"{what} took {elapsed:.2f} s"
    # A 503 must never tell the browser to forget its session.
    assert not any(h.startswith("session=") for h in response.headers.get_list("set-cookie")), what


def requests_needing_the_store(
    server: Server, canvas: FakeCanvas, user: CanvasUser, session_id: str
) -> dict[str, Callable[[], tuple[httpx.Response, float]]]:
    """One request per route family, each of which must reach the store to answer."""
    by_header = {"x-session-id": session_id}
    by_cookie = {"cookie": f"session={session_id}"}

    def signed_launch() -> tuple[httpx.Response, float]:
        body, headers = canvas.signed_launch(server.url + "/api/lti", user)
        return timed("POST", server.url + "/api/lti", content=body, headers=headers)

    return {
        "read": lambda: timed("GET", f"{server.url}/api/sessions/{session_id}", headers=by_header),
        "list": lambda: timed("GET", server.url + "/api/sessions", headers=by_header),
        "terms": lambda: timed("GET", server.url + "/api/terms", headers=by_header),
        "home page": lambda: timed("GET", server.url + "/", headers=by_cookie),
        "logout": lambda: timed("GET", server.url + "/api/sessions/logout", headers=by_cookie),
        "jwt": lambda: timed(
            "POST", server.url + "/api/sessions", json={"jwt_token": canvas.jwt_token(user)}
        ),
        "launch": signed_launch,
    }


def assert_every_request_is_refused_in_time(
    server: Server, canvas: FakeCanvas, user: CanvasUser, session_id: str
) -> None:
    """All at once, as a busy service would see them; each is timed on its own."""
    sends = requests_needing_the_store(server, canvas, user, session_id)
    with ThreadPoolExecutor(len(sends)) as pool:
        answers = {what: pool.submit(send) for what, send in sends.items()}
    for what, answer in answers.items():
        assert_unavailable(*answer.result(), what)


def read(server: Server, session_id: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}, timeout=15
    )


def read_until_answered(server: Server, session_id: str, within: float = 6.0) -> httpx.Response:
    """Reads until the answer is not 503 (a pool reconnects in the background)."""
    deadline = time.monotonic() + within
    while True:
        response = read(server, session_id)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Server]]:
    """Records in SQLite, sessions and single-use markers in a Redis of this module's own."""
    with redis_server() as redis:
        server = start_server(
            tmp_path_factory.mktemp("outage-redis"), redis_url=redis.url, store_timeout=STORE_TIMEOUT
        )
        try:
            yield redis, server
        finally:
            server.stop()


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the processes: the sockets stay open but nothing answers, as when a host hangs.
    The store's timeout is what must end the wait."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_requests_answer_503_quickly_while_redis_is_down_and_new_sessions_work_once_it_is_back(
    redis_service: tuple[RedisServer, Server],
) -> None:
    redis, server = redis_service
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    assert read(server, session_id).status_code == 200

    redis.stop()
    try:
        assert_every_request_is_refused_in_time(server, canvas, user, session_id)
    finally:
        redis.start()  # same port and directory: its AOF brings every acknowledged write back

    # The session survived the restart (kill -9 included: appendfsync always) ...
    assert read_until_answered(server, session_id).status_code == 200
    # ... and the same service process, never restarted, serves again: a launch and a new session.
    launched = launch(server, canvas, user)
    assert launched.status_code == 303, launched.text
    fresh = create_session(server, canvas, user)
    response = read(server, fresh)
    assert response.status_code == 200 and response.json()["sid"] == fresh


def test_a_frozen_redis_answers_503_after_about_the_store_timeout_and_the_same_session_reads_again(
    redis_service: tuple[RedisServer, Server],
) -> None:
    redis, server = redis_service
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    assert read(server, session_id).status_code == 200
    assert redis.process is not None

    with frozen([redis.process.pid]):
        response, elapsed = timed(
            "GET", f"{server.url}/api/sessions/{session_id}", headers={"x-session-id": session_id}
        )
        assert_unavailable(response, elapsed, "read from a frozen Redis")
        # It waited for the timeout (the connection was open, nobody answered) and no longer.
        assert elapsed >= STORE_TIMEOUT * 0.8
        response, elapsed = timed(
            "POST", server.url + "/api/sessions", json={"jwt_token": canvas.jwt_token(user)}
        )
        assert_unavailable(response, elapsed, "JWT exchange with a frozen Redis")
        print(f"create with a frozen Redis answered 503 in {elapsed:.2f} s")
        # One store_timeout for the whole create, as documented, not one per store call.
        assert elapsed < STORE_TIMEOUT + 0.5, f"create took {elapsed:.2f} s"

    response = read_until_answered(server, session_id)
    assert response.status_code == 200, response.text
    assert response.json()["sid"] == session_id


def test_the_service_starts_while_redis_is_down_answers_503_and_serves_once_redis_is_up(
    tmp_path: Path,
) -> None:
    with redis_server() as redis:
        redis.stop()
        server = start_server(tmp_path, redis_url=redis.url, store_timeout=STORE_TIMEOUT)
        try:
            assert httpx.get(server.url + "/healthz").status_code == 200
            canvas, user = server.add_institution(), CanvasUser()
            body, headers = canvas.signed_launch(server.url + "/api/lti", user)
            response, elapsed = timed("POST", server.url + "/api/lti", content=body, headers=headers)
            assert_unavailable(response, elapsed, "launch before Redis is up")

            redis.start()
            # The refused launch claimed nothing (its nonce lives in Redis, which was down), so
            # the very same signed form now goes through.
            response, _ = timed("POST", server.url + "/api/lti", content=body, headers=headers)
            assert response.status_code == 303, response.text
            onboard(server, canvas, user)
            session_id = create_session(server, canvas, user)
            assert read(server, session_id).status_code == 200
        finally:
            server.stop()


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Server]]:
    """Everything (sessions included) in a PostgreSQL server of this module's own, no Redis."""
    with postgres_server() as postgres:
        server = start_server(
            tmp_path_factory.mktemp("outage-pg"), database_url=postgres.url, store_timeout=STORE_TIMEOUT
        )
        try:
            yield postgres, server
        finally:
            server.stop()


def kill_postgres(postgres: PostgresServer) -> None:
    """``kill -9`` the postmaster and every process it forked. Stopped first, so that no backend
    it forks between the listing and the kill survives (a backend whose postmaster died keeps
    answering its connection until it notices)."""
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGSTOP)
    for pid in postgres_pids(postgres):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def postgres_pids(postgres: PostgresServer) -> list[int]:
    """The postmaster and every process it forked (backends, checkpointer, ...)."""
    postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == postmaster:
                    children.append(int(entry.name))
    return [postmaster, *children]


def test_requests_answer_503_quickly_while_postgresql_is_down_and_the_same_session_reads_again(
    postgres_service: tuple[PostgresServer, Server],
) -> None:
    postgres, server = postgres_service
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    assert read(server, session_id).status_code == 200

    postgres.stop()
    try:
        assert_every_request_is_refused_in_time(server, canvas, user, session_id)
    finally:
        postgres.start()  # same data directory: the session is still stored

    response = read_until_answered(server, session_id)
    assert response.status_code == 200, response.text
    assert response.json()["sid"] == session_id
    # Writes work again too, in the same service process.
    fresh = create_session(server, canvas, user)
    assert read(server, fresh).status_code == 200


def test_a_frozen_postgresql_answers_503_after_about_the_store_timeout_and_recovers(
    postgres_service: tuple[PostgresServer, Server],
) -> None:
    postgres, server = postgres_service
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    session_id = create_session(server, canvas, user)
    assert read(server, session_id).status_code == 200

    with frozen(postgres_pids(postgres)):
        for what, send in requests_needing_the_store(server, canvas, user, session_id).items():
            if what in ("read", "jwt", "launch"):
                response, elapsed = send()
                assert_unavailable(response, elapsed, f"{what} with a frozen PostgreSQL")

    response = read_until_answered(server, session_id)
    assert response.status_code == 200, response.text
    assert response.json()["sid"] == session_id


# -- Redis durability: single-use markers survive a restart, or the service refuses ----------


def test_a_used_jwt_and_a_used_launch_nonce_stay_used_after_redis_is_killed_and_restarted(
    redis_service: tuple[RedisServer, Server],
) -> None:
    redis, server = redis_service
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    token = canvas.jwt_token(user, resource_link_id="replayed-after-restart")
    created = httpx.post(server.url + "/api/sessions", json={"jwt_token": token}, timeout=15)
    assert created.status_code == 201, created.text
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)
    launched = httpx.post(server.url + "/api/lti", content=body, headers=headers, timeout=15)
    assert launched.status_code == 303, launched.text

    redis.stop()  # SIGKILL: no shutdown save
    redis.start()

    deadline = time.monotonic() + 6
    while True:  # the next command reconnects
        replayed = httpx.post(server.url + "/api/sessions", json={"jwt_token": token}, timeout=15)
        if replayed.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert replayed.status_code == 401 and replayed.json()["code"] == "token_already_used", replayed.text
    again = httpx.post(server.url + "/api/lti", content=body, headers=headers, timeout=15)
    assert again.status_code == 401 and again.json()["code"] == "replayed_nonce", again.text
    assert read(server, created.json()["sessionId"]).status_code == 200


def test_the_service_refuses_to_start_on_a_redis_without_persistence(tmp_path: Path) -> None:
    with (
        redis_server(persistent=False) as redis,
        pytest.raises(RuntimeError, match="server did not start") as refused,
    ):
        start_server(tmp_path, redis_url=redis.url, store_timeout=STORE_TIMEOUT)
    message = str(refused.value)
    assert "appendonly" in message and "COMMONS_SESSION_REDIS_ALLOW_VOLATILE" in message, message
    assert "Traceback" not in message, message


def test_an_allowed_volatile_redis_starts_and_readyz_says_so(tmp_path: Path) -> None:
    with redis_server(persistent=False) as redis:
        server = start_server(
            tmp_path, redis_url=redis.url, store_timeout=STORE_TIMEOUT, redis_allow_volatile=True
        )
        try:
            ready = httpx.get(server.url + "/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            assert any("appendonly" in w for w in ready.json()["warnings"]), ready.text
            assert "volatile" in server.log_path.read_text()
        finally:
            server.stop()


def test_readyz_fails_once_a_running_redis_starts_evicting(
    redis_service: tuple[RedisServer, Server],
) -> None:
    """Checked at every readiness probe, not only at start: a CONFIG SET later is seen too."""
    redis, server = redis_service
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    with redis_py.Redis.from_url(redis.url) as admin:
        admin.config_set("maxmemory-policy", "volatile-lru")
        try:
            assert httpx.get(server.url + "/readyz", timeout=5).status_code == 503
        finally:
            admin.config_set("maxmemory-policy", "noeviction")
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200


# -- a create that fails for a store fault leaves its token usable ------------------------------


def retried(send: Callable[[], httpx.Response], within: float = 3 * STORE_TIMEOUT + 4) -> httpx.Response:
    """Sends until the answer is not 503: the token's provisional claim lapses by itself."""
    deadline = time.monotonic() + within
    while True:
        response = send()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.25)


def assert_a_failed_create_and_launch_leave_token_and_nonce_usable(
    server: Server, freeze: Callable[[], contextlib.AbstractContextManager[None]]
) -> None:
    canvas, user = server.add_institution(), CanvasUser()
    onboard(server, canvas, user)
    token = canvas.jwt_token(user, resource_link_id="retried-after-a-fault")
    body, headers = canvas.signed_launch(server.url + "/api/lti", user)

    def create() -> httpx.Response:
        return httpx.post(server.url + "/api/sessions", json={"jwt_token": token}, timeout=15)

    def relaunch() -> httpx.Response:
        return httpx.post(server.url + "/api/lti", content=body, headers=headers, timeout=15)

    with freeze():
        assert_unavailable(*timed("POST", server.url + "/api/sessions", json={"jwt_token": token}), "create")
        assert_unavailable(*timed("POST", server.url + "/api/lti", content=body, headers=headers), "launch")

    created = retried(create)
    assert created.status_code == 201, created.text
    assert read(server, created.json()["sessionId"]).status_code == 200
    launched = retried(relaunch)
    assert launched.status_code == 303, launched.text
    # Usable once: now they are used.
    assert create().json()["code"] == "token_already_used"
    assert relaunch().json()["code"] == "replayed_nonce"


def test_a_create_and_a_launch_refused_by_a_frozen_redis_leave_the_token_and_nonce_usable_once(
    redis_service: tuple[RedisServer, Server],
) -> None:
    redis, server = redis_service
    assert redis.process is not None
    pid = redis.process.pid
    assert_a_failed_create_and_launch_leave_token_and_nonce_usable(server, lambda: frozen([pid]))


def test_a_create_and_a_launch_refused_by_a_frozen_postgresql_leave_the_token_and_nonce_usable_once(
    postgres_service: tuple[PostgresServer, Server],
) -> None:
    postgres, server = postgres_service
    assert_a_failed_create_and_launch_leave_token_and_nonce_usable(
        server, lambda: frozen(postgres_pids(postgres))
    )


def test_a_create_with_rate_limits_on_answers_503_within_one_store_timeout_when_redis_freezes(
    tmp_path: Path,
) -> None:
    """The rate-limit counters live in the same Redis: a stall must not cost a store_timeout
    for each of them and then another for the claim (it answered after ~3 timeouts)."""
    with redis_server() as redis:
        server = start_server(
            tmp_path,
            redis_url=redis.url,
            store_timeout=STORE_TIMEOUT,
            rate_limit_institution_requests=10_000,
            rate_limit_address_failures=10_000,
        )
        try:
            canvas, user = server.add_institution(), CanvasUser()
            onboard(server, canvas, user)
            token = canvas.jwt_token(user)
            assert redis.process is not None
            with frozen([redis.process.pid]):
                response, elapsed = timed("POST", server.url + "/api/sessions", json={"jwt_token": token})
                assert_unavailable(response, elapsed, "create with rate limits and a frozen Redis")
                print(f"create with rate limits and a frozen Redis answered 503 in {elapsed:.2f} s")
                assert elapsed < STORE_TIMEOUT + 0.5, f"create took {elapsed:.2f} s"
            created = retried(lambda: httpx.post(server.url + "/api/sessions", json={"jwt_token": token}))
            assert created.status_code == 201, created.text
        finally:
            server.stop()
