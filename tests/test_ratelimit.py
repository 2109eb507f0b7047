"""Rate limits: per client address on failures (refused creates and launches, failed session
lookups), per institution on verified creates and launches; 429 problem with ``Retry-After``;
``X-Forwarded-For`` believed only from trusted proxies; shared through Redis; open when the
counters are unreachable.

Most tests share one server with small limits that trusts 127.0.0.1 as a proxy, and each
test comes from an address of its own (``X-Forwarded-For``), so their counters never meet."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from commons_session.config import Settings

from .backends import redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, session_cookie, start_server
from .platform13 import jwks_server, login, post_launch, register

UNKNOWN_ID = "Q" * 42 + "A"  # well-formed, never issued
LIMIT = 3  # failures per address
INSTITUTION_LIMIT = 6  # verified creates and launches per institution
WINDOW = 30

MakeServer = Callable[..., Server]
_addresses = (f"198.18.{n // 250}.{n % 250 + 1}" for n in itertools.count())  # RFC 2544 range


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("limited"),
        rate_limit_address_failures=LIMIT,
        rate_limit_institution_requests=INSTITUTION_LIMIT,
        rate_limit_window=WINDOW,
        trusted_proxies="127.0.0.1",
    )
    yield srv
    srv.stop()


@pytest.fixture
def client(limited: Server) -> Iterator[httpx.Client]:
    """Requests to the limited server from an address no other test uses."""
    with limited.client(headers={"x-forwarded-for": next(_addresses)}) as c:
        yield c


def _forged(client: httpx.Client, canvas: FakeCanvas) -> httpx.Response:
    """A create with a token signed by the wrong secret."""
    token = canvas.jwt_token(CanvasUser(), secret="not-the-secret")
    return client.post("/api/sessions", json={"jwt_token": token})


def _onboard(server: Server, client: httpx.Client, canvas: FakeCanvas, user: CanvasUser) -> str:
    response = launch(server, canvas, user, client=client)
    assert response.status_code == 303, response.text
    session_id = session_cookie(response)
    version = client.get("/api/terms", headers={"x-session-id": session_id}).json()["version"]
    accepted = client.post("/api/terms/accept", json={"version": version, "sessionId": session_id})
    assert accepted.status_code == 204
    return session_id


def _sessions(client: httpx.Client, canvas: FakeCanvas, user: CanvasUser, count: int) -> list[str]:
    """``count`` sessions from as many distinct tokens (a distinct ``iat`` each)."""
    start = int(time.time())
    ids = []
    for n in range(count):
        response = client.post("/api/sessions", json={"jwt_token": canvas.jwt_token(user, iat=start - n)})
        assert response.status_code == 201, response.text
        ids.append(str(response.json()["sessionId"]))
    return ids


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW


def test_bad_tokens_get_429_with_retry_after_after_the_limit_and_not_before(
    limited: Server, client: httpx.Client
) -> None:
    canvas, user = limited.add_institution(), CanvasUser()
    # Successes never count: more of them than the limit, from the same address.
    session_id = _onboard(limited, client, canvas, user)
    _sessions(client, canvas, user, LIMIT + 1)
    assert 1 + LIMIT + 1 <= INSTITUTION_LIMIT

    assert [_forged(client, canvas).status_code for _ in range(LIMIT)] == [401] * LIMIT
    _assert_rate_limited(_forged(client, canvas))
    # Blocked for every create and launch, valid ones included ...
    _assert_rate_limited(launch(limited, canvas, user, client=client))
    _assert_rate_limited(client.post("/api/sessions", json={"jwt_token": canvas.jwt_token(user)}))
    # ... but not for a live session, nor for probes.
    assert client.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_failed_session_lookups_count_against_the_address(limited: Server, client: httpx.Client) -> None:
    canvas, user = limited.add_institution(), CanvasUser()
    _onboard(limited, client, canvas, user)
    [live] = _sessions(client, canvas, user, 1)
    # Reading a live session many times is not a failure; presenting no id is no lookup.
    for _ in range(LIMIT + 2):
        assert client.get(f"/api/sessions/{live}", headers={"x-session-id": live}).status_code == 200
        assert client.get("/api/terms").status_code == 401

    statuses = [
        client.get(f"/api/sessions/{UNKNOWN_ID}", headers={"x-session-id": UNKNOWN_ID}).status_code,
        client.get("/api/sessions/logout", params={"session-id": UNKNOWN_ID}).status_code,
        client.get("/api/terms", headers={"x-session-id": "malformed"}).status_code,
    ]
    assert statuses == [401] * LIMIT
    _assert_rate_limited(client.get(f"/api/sessions/{UNKNOWN_ID}", headers={"x-session-id": UNKNOWN_ID}))


def test_addresses_behind_a_trusted_proxy_are_counted_separately(limited: Server) -> None:
    canvas = limited.add_institution()
    first, second = next(_addresses), next(_addresses)
    with limited.client(headers={"x-forwarded-for": first}) as one:
        assert [_forged(one, canvas).status_code for _ in range(LIMIT)] == [401] * LIMIT
        _assert_rate_limited(_forged(one, canvas))
    # The proxy appends the peer it saw; what a client put to the left of it is not believed.
    with limited.client(headers={"x-forwarded-for": f"{first}, {second}"}) as two:
        assert [_forged(two, canvas).status_code for _ in range(LIMIT)] == [401] * LIMIT
        _assert_rate_limited(_forged(two, canvas))

    # The access line names the address the limiter settled on (it is written after the answer).
    deadline = time.monotonic() + 5
    while not any(e.get("client") == second and e.get("status") == 429 for e in limited.log_entries()):
        assert time.monotonic() < deadline, "no access line for the forwarded address"
        time.sleep(0.05)


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_server: MakeServer) -> None:
    srv = make_server(rate_limit_address_failures=2, trusted_proxies="10.0.0.0/8, 192.0.2.1")
    canvas = srv.add_institution()
    statuses = []
    for n in range(3):
        with srv.client(headers={"x-forwarded-for": f"203.0.113.{n}"}) as c:
            statuses.append(_forged(c, canvas).status_code)
    assert statuses == [401, 401, 429]  # all three came from 127.0.0.1, whatever the header said


def test_institution_limit_counts_only_verified_requests(limited: Server) -> None:
    canvas, other = limited.add_institution(), limited.add_institution()
    # Forged requests naming the institution (each from another address) never use it up.
    for _ in range(INSTITUTION_LIMIT + 1):
        with limited.client(headers={"x-forwarded-for": next(_addresses)}) as c:
            assert _forged(c, canvas).status_code == 401

    with limited.client(headers={"x-forwarded-for": next(_addresses)}) as c:
        user = CanvasUser()
        _onboard(limited, c, canvas, user)  # the launch: 1
        _sessions(c, canvas, user, INSTITUTION_LIMIT - 1)  # and the rest
        token = canvas.jwt_token(user, iat=int(time.time()) - 200)
        _assert_rate_limited(c.post("/api/sessions", json={"jwt_token": token}))
        assert launch(limited, canvas, user, client=c).status_code == 429
        # Another institution has its own allowance.
        other_user = CanvasUser()
        _onboard(limited, c, other, other_user)
        _sessions(c, other, other_user, 1)


def test_limits_are_shared_by_two_servers_on_one_redis(make_server: MakeServer) -> None:
    with redis_server() as redis:
        first = make_server(redis_url=redis.url, rate_limit_address_failures=4, rate_limit_window=WINDOW)
        second = make_server(redis_url=redis.url, rate_limit_address_failures=4, rate_limit_window=WINDOW)
        canvas = FakeCanvas("key-unregistered", "secret")  # refused by both servers
        with first.client() as one, second.client() as two:
            assert [_forged(one, canvas).status_code for _ in range(2)] == [401, 401]
            assert [_forged(two, canvas).status_code for _ in range(2)] == [401, 401]
            # Four failures in all, though each server alone has seen only two.
            _assert_rate_limited(_forged(one, canvas))
            _assert_rate_limited(_forged(two, canvas))


def test_limiter_lets_requests_in_when_its_redis_is_down(make_server: MakeServer) -> None:
    with redis_server() as redis:
        srv = make_server(redis_url=redis.url, rate_limit_address_failures=2)
        canvas = srv.add_institution()
        with srv.client() as c:
            assert _forged(c, canvas).status_code == 401  # counted in Redis
            redis.stop()
            # Past the limit, but the counters are unreachable: refused as forged, never 429 or 500.
            assert [_forged(c, canvas).status_code for _ in range(4)] == [401] * 4
            metrics = c.get("/metrics").text
    assert "rate-limit counters unavailable" in srv.logs()
    assert "commons_session_rate_limit_store_errors_total 4.0" in metrics  # one per attempt


def test_default_limits_stop_a_hammering_client_within_seconds_but_spare_a_school() -> None:
    defaults = Settings()
    per_second = defaults.rate_limit_address_failures / defaults.rate_limit_window
    assert 0 < per_second <= 2, "a client hammering bad tokens must be stopped within seconds"
    # A school's verified traffic has a much larger allowance than one address's failures.
    assert defaults.rate_limit_institution_requests >= 20 * defaults.rate_limit_address_failures
    assert defaults.trusted_proxies == []


# -- replays never spend the institution's budget (issue 11, item 7) ---------------------


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings for each counter backend: process memory, or a Redis of the test's own."""
    if request.param == "memory":
        yield {}
        return
    with redis_server() as redis:
        yield {"redis_url": redis.url}


def _from(server: Server) -> httpx.Client:
    return server.client(headers={"x-forwarded-for": next(_addresses)})


def test_replayed_expired_and_forged_credentials_never_spend_the_institutions_budget(
    make_server: MakeServer, counters: dict[str, str]
) -> None:
    budget = 4  # the real requests below: a 1.1 launch, a 1.3 launch and two creates
    srv = make_server(
        rate_limit_address_failures=LIMIT,
        rate_limit_institution_requests=budget,
        rate_limit_window=WINDOW,
        trusted_proxies="127.0.0.1",
        **counters,
    )
    with jwks_server() as jwks:
        platform = register(srv, jwks)
        canvas, user = FakeCanvas(platform.consumer_key, platform.secret), CanvasUser()
        # Real use: a launch, its terms, one create and one LTI 1.3 launch (3 of 4).
        body, headers = canvas.signed_launch(srv.url + "/api/lti", user)
        with _from(srv) as school:
            response = school.post("/api/lti", content=body, headers=headers)
            assert response.status_code == 303, response.text
            session_id = session_cookie(response)
            [code] = parse_qs(urlsplit(response.headers["location"]).query)["code"]
            assert school.post("/api/sessions/exchange", json={"code": code}).status_code == 200
            version = school.get("/api/terms", headers={"x-session-id": session_id}).json()["version"]
            accepted = school.post("/api/terms/accept", json={"version": version, "sessionId": session_id})
            assert accepted.status_code == 204
            used = canvas.jwt_token(user)
            assert school.post("/api/sessions", json={"jwt_token": used}).status_code == 201
        started = login(srv, platform)
        id_token = platform.id_token(user, started.nonce)
        lti13 = {"id_token": id_token, "state": started.state}
        assert post_launch(srv, id_token, started.state, started.binding).status_code in (200, 303)

        stale: dict[str, Callable[[httpx.Client], httpx.Response]] = {
            "used": lambda c: c.post("/api/sessions", json={"jwt_token": used}),
            "expired": lambda c: c.post(
                "/api/sessions", json={"jwt_token": canvas.jwt_token(user, iat=int(time.time()) - 3_600)}
            ),
            "forged": lambda c: _forged(c, canvas),
            "launch": lambda c: c.post("/api/lti", content=body, headers=headers),
            "lti13": lambda c: c.post(
                "/api/lti/launch", data=lti13, headers={"cookie": f"lti1p3_state={started.binding}"}
            ),
            "exchange": lambda c: c.post("/api/sessions/exchange", json={"code": code}),
        }
        for name, replay in stale.items():
            # Many replayers, each refused, past the school's whole budget ...
            for _ in range(budget + 2):
                with _from(srv) as replayer:
                    status = replay(replayer).status_code
                    assert 400 <= status < 500 and status != 429, (name, status)
            # ... and one replaying address is stopped by its own limit, not the school's.
            with _from(srv) as replayer:
                assert [replay(replayer).status_code != 429 for _ in range(LIMIT)] == [True] * LIMIT
                _assert_rate_limited(replay(replayer))

        # The school's real users still have the budget their own requests left: one create.
        with _from(srv) as school:
            # One clock reading for both: read twice across a second's turn, the two iats
            # (and so the two tokens) would be the same, and the second a replay.
            now = int(time.time())
            fresh = canvas.jwt_token(user, iat=now - 100)
            created = school.post("/api/sessions", json={"jwt_token": fresh})
            assert created.status_code == 201, created.text
            over = canvas.jwt_token(user, iat=now - 101)
            _assert_rate_limited(school.post("/api/sessions", json={"jwt_token": over}))


def test_a_create_or_launch_refused_by_the_institutions_limit_keeps_its_token_usable(
    make_server: MakeServer,
) -> None:
    window = 2
    srv = make_server(rate_limit_institution_requests=1, rate_limit_window=window)
    canvas, user = srv.add_institution(), CanvasUser()
    with srv.client() as c:
        _onboard(srv, c, canvas, user)  # the whole budget of this window
        token = canvas.jwt_token(user)
        body, headers = canvas.signed_launch(srv.url + "/api/lti", user)
        refused = c.post("/api/sessions", json={"jwt_token": token})
        assert refused.status_code == 429, refused.text
        assert c.post("/api/lti", content=body, headers=headers).status_code == 429
        time.sleep(int(refused.headers["retry-after"]) + 0.2)
        # The claims were given back: the same token and the same launch work in the next window.
        assert c.post("/api/sessions", json={"jwt_token": token}).status_code == 201
        time.sleep(window + 0.2)
        assert c.post("/api/lti", content=body, headers=headers).status_code == 303


# -- a blocked address keeps its live sessions (issue 11, item 8) --------------------------


def test_a_blocked_address_is_served_its_live_sessions_on_every_server_but_its_guesses_are_not(
    make_server: MakeServer,
) -> None:
    with redis_server() as redis:
        settings = {"redis_url": redis.url, "rate_limit_address_failures": LIMIT, "rate_limit_window": WINDOW}
        first, second = make_server(**settings), make_server(**settings)
        canvas, user = first.add_institution(), CanvasUser()
        with first.client() as one, second.client() as two:
            session_id = _onboard(first, one, canvas, user)
            [other] = _sessions(one, canvas, user, 1)
            # One client behind the school's address hammers forged tokens until it is blocked.
            assert [_forged(one, canvas).status_code for _ in range(LIMIT)] == [401] * LIMIT
            _assert_rate_limited(_forged(one, canvas))
            for c in (one, two):
                # Creates and launches stay refused ...
                _assert_rate_limited(c.post("/api/sessions", json={"jwt_token": canvas.jwt_token(user)}))
                _assert_rate_limited(launch(first, canvas, user, client=c))
                # ... live sessions are served, on the server that blocked and on the other ...
                read = c.get(f"/api/sessions/{session_id}", headers={"x-session-id": session_id})
                assert read.status_code == 200, read.text
                assert c.get("/api/terms", headers={"x-session-id": session_id}).status_code == 200
                # ... and a guessed id gets the same 429 as a blocked create, whatever it names.
                for guess in (UNKNOWN_ID, "malformed"):
                    _assert_rate_limited(c.get(f"/api/sessions/{guess}", headers={"x-session-id": guess}))
                _assert_rate_limited(c.get("/api/sessions/logout", params={"session-id": UNKNOWN_ID}))
            assert one.get("/api/sessions/logout", params={"session-id": other}).status_code in (200, 204)
            # A session ended since is a guess like any other.
            _assert_rate_limited(two.get(f"/api/sessions/{other}", headers={"x-session-id": other}))
