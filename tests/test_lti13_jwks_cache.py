"""The platform's JWKS is cached as its HTTP headers say, within a floor and a ceiling.

Three layers, each against the real thing where it matters:

- ``lti.http_cache.freshness``: what a set of response headers means (pure; a table).
- ``KeySets`` with the real fetcher (``http.jwks``) against ``tests/platform13.py``'s JWKS
  server over HTTP, on a clock the test moves: every boundary is exact and nothing sleeps. The
  server counts its fetches and its 304s and records each request's headers.
- Launches against a running server whose floor and ceiling are 1 and 2 seconds: the settings
  reach the worker and the cache works end to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from commons_session.errors import UnknownKid
from commons_session.http.jwks import make_jwks_fetcher
from commons_session.lti.http_cache import Freshness, freshness
from commons_session.lti.v13 import KeySets

from .canvas import CanvasUser
from .conftest import Server, start_server
from .platform13 import JwksServer, Platform, jwks_server, login, post_launch, register

T0 = 1_800_000_000.0
DATE = formatdate(T0, usegmt=True)


# -- what the headers mean --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Freshness(None)),
        ({"cache-control": "max-age=120"}, Freshness(120.0)),
        ({"cache-control": "public, MAX-AGE=120, must-revalidate"}, Freshness(120.0)),
        ({"cache-control": 'max-age="120"'}, Freshness(120.0)),
        ({"cache-control": "max-age=120, max-age=5"}, Freshness(120.0)),  # the first counts
        ({"cache-control": "max-age=0"}, Freshness(0.0)),
        ({"cache-control": "max-age=-5"}, Freshness(0.0)),  # invalid means stale
        ({"cache-control": "max-age=abc"}, Freshness(0.0)),
        ({"cache-control": "max-age=1e9"}, Freshness(0.0)),
        ({"cache-control": "max-age=\uff19"}, Freshness(0.0)),  # a non-ASCII digit is no digit
        ({"cache-control": "max-age=99999999999999999999"}, Freshness(0.0)),
        ({"cache-control": "no-store, max-age=600", "etag": '"a"'}, Freshness(0.0)),
        ({"cache-control": "no-cache, max-age=600", "etag": '"a"'}, Freshness(0.0, '"a"')),
        ({"cache-control": "max-age=600", "age": "500"}, Freshness(100.0)),
        ({"cache-control": "max-age=600", "age": "900"}, Freshness(0.0)),
        ({"cache-control": "max-age=600", "age": "x"}, Freshness(600.0)),
        ({"expires": formatdate(T0 + 600, usegmt=True), "date": DATE}, Freshness(600.0)),
        ({"expires": formatdate(T0 + 600, usegmt=True)}, Freshness(600.0)),  # from our clock
        ({"expires": formatdate(T0 - 600, usegmt=True), "date": DATE}, Freshness(0.0)),
        ({"expires": "0", "date": DATE}, Freshness(0.0)),  # an invalid Expires is in the past
        ({"expires": formatdate(T0 + 600, usegmt=True), "cache-control": "max-age=60"}, Freshness(60.0)),
        ({"etag": '"v1"', "last-modified": DATE}, Freshness(None, '"v1"', DATE)),
        ({"etag": "x" * 300}, Freshness(None)),  # too long to keep
        ({"etag": '"a\r\nX-Injected: 1"'}, Freshness(None)),  # would split the request header
        ({"last-modified": "yesterday"}, Freshness(None)),
    ],
    ids=repr,
)
def test_freshness_reads_cache_control_expires_age_and_validators(
    headers: dict[str, str], expected: Freshness
) -> None:
    assert freshness(headers, T0) == expected


def test_the_platforms_word_is_held_within_the_floor_and_the_ceiling() -> None:
    keys = KeySets(None, ttl=300, min_ttl=60, max_ttl=86_400)
    assert keys.lifetime(None) == 300  # said nothing: our default
    assert keys.lifetime(0) == 60  # no-store: still not a fetch per launch
    assert keys.lifetime(120) == 120
    assert keys.lifetime(10**12) == 86_400  # not forever
    assert KeySets(None, min_ttl=100, max_ttl=10).lifetime(50) == 100  # a ceiling below the floor


# -- KeySets, the real fetcher and the platform's JWKS over HTTP, on a moved clock ---------------


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


class Clocked:
    """A KeySets with the real HTTP fetcher, whose clock the test sets."""

    def __init__(self, platform: Platform, **limits: float) -> None:
        self.now = T0
        self.platform = platform
        self.keys = KeySets(make_jwks_fetcher(5.0), clock=lambda: self.now, **limits)

    def at(self, t: float, kid: str | None = None) -> bool:
        """At ``T0 + t``, look up ``kid`` (the platform's current one by default): found?"""
        self.now = T0 + t

        async def look() -> bool:
            try:
                await self.keys.key(self.platform.jwks_url, kid or self.platform.kid)
            except UnknownKid:
                return False
            return True

        return asyncio.run(look())


def _platform(jwks: JwksServer, *, etag: bool = False, **headers: str) -> Platform:
    platform = Platform(jwks, "key", "secret")
    platform.cache_headers(**headers)
    if etag:
        jwks.etags.add(platform.path)
    return platform


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({}, 300),  # no headers: COMMONS_SESSION_JWKS_CACHE_TTL
        ({"cache_control": "max-age=120"}, 120),
        ({"cache_control": "max-age=5"}, 60),  # below the floor
        ({"cache_control": "max-age=31536000"}, 86_400),  # above the ceiling
        ({"cache_control": "no-store"}, 60),
        ({"cache_control": "no-cache"}, 60),
        ({"cache_control": "max-age=600", "age": "480"}, 120),
        ({"expires": formatdate(T0 + 600, usegmt=True), "date": DATE}, 600),
        ({"expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 60),
        ({"cache_control": "max-age=nonsense"}, 60),
    ],
    ids=repr,
)
def test_the_jwks_is_fetched_again_exactly_when_its_headers_say_within_bounds(
    jwks: JwksServer, headers: dict[str, str], lifetime: int
) -> None:
    platform = _platform(jwks)
    platform.cache_headers(**headers)
    clocked = Clocked(platform, ttl=300, min_ttl=60, max_ttl=86_400)
    assert clocked.at(0) and platform.fetches == 1
    assert clocked.at(lifetime - 0.5) and platform.fetches == 1
    assert clocked.at(lifetime) and platform.fetches == 2
    assert clocked.at(lifetime + 1) and platform.fetches == 2


def test_a_stale_set_with_an_etag_is_revalidated_and_a_304_keeps_the_keys(jwks: JwksServer) -> None:
    platform = _platform(jwks, etag=True, cache_control="max-age=60")
    clocked = Clocked(platform, ttl=300, min_ttl=10, max_ttl=86_400)
    assert clocked.at(0)
    first = jwks.requests[platform.path][0]
    assert "if-none-match" not in first

    assert clocked.at(60)
    assert platform.fetches == 2 and platform.not_modified == 1
    assert jwks.requests[platform.path][1]["if-none-match"].startswith('"')
    assert clocked.at(119) and platform.fetches == 2  # the 304's max-age renewed it
    assert clocked.at(120) and platform.not_modified == 2

    # The platform rotates: the new kid forces a refetch, whose old ETag no longer matches.
    old = platform.kid
    platform.rotate()
    assert clocked.at(121)
    assert platform.fetches == 4 and platform.not_modified == 2
    assert not clocked.at(122, kid=old)  # the old key is gone with the old set


def test_no_cache_revalidates_every_time_but_no_more_often_than_the_floor(jwks: JwksServer) -> None:
    platform = _platform(jwks, etag=True, cache_control="no-cache")
    clocked = Clocked(platform, ttl=300, min_ttl=30, max_ttl=86_400)
    for t in (0, 10, 29.9):
        assert clocked.at(t)
    assert platform.fetches == 1
    assert clocked.at(30) and clocked.at(60)
    assert platform.fetches == 3 and platform.not_modified == 2


def test_last_modified_is_sent_back_when_there_is_no_etag(jwks: JwksServer) -> None:
    platform = _platform(jwks, cache_control="max-age=60", last_modified=DATE)
    clocked = Clocked(platform, ttl=300, min_ttl=10, max_ttl=86_400)
    assert clocked.at(0) and clocked.at(60)
    assert jwks.requests[platform.path][1]["if-modified-since"] == DATE
    assert platform.fetches == 2  # this server ignores it and answers 200: fine too


def test_no_store_does_not_keep_validators(jwks: JwksServer) -> None:
    platform = _platform(jwks, etag=True, cache_control="no-store")
    clocked = Clocked(platform, ttl=300, min_ttl=10, max_ttl=86_400)
    assert clocked.at(0) and clocked.at(10)
    assert platform.fetches == 2 and platform.not_modified == 0
    assert "if-none-match" not in jwks.requests[platform.path][1]


def test_unknown_kids_refetch_at_most_every_five_seconds_whatever_the_headers(jwks: JwksServer) -> None:
    platform = _platform(jwks, etag=True, cache_control="max-age=86400")
    clocked = Clocked(platform, ttl=300, min_ttl=60, max_ttl=86_400)
    assert not clocked.at(0, kid="made-up-1")  # the first fetch
    assert not clocked.at(1, kid="made-up-2")  # the set is fresh: one forced refetch (a 304)
    assert platform.fetches == 2 and platform.not_modified == 1
    for t in (2, 3, 4, 5.9):
        assert not clocked.at(t, kid=f"made-up-{t}")
    assert platform.fetches == 2
    assert not clocked.at(6, kid="made-up-6") and platform.fetches == 3
    assert clocked.at(6.5) and platform.fetches == 3  # the real kid needs no fetch


def test_a_failing_refetch_keeps_the_known_keys_and_is_retried_at_the_refetch_rate(jwks: JwksServer) -> None:
    platform = _platform(jwks, cache_control="max-age=60")
    clocked = Clocked(platform, ttl=300, min_ttl=10, max_ttl=86_400)
    assert clocked.at(0)
    document = jwks.documents.pop(platform.path)  # the platform now answers 404
    assert clocked.at(60) and platform.fetches == 2  # stale, refetch failed, old keys still verify
    for t in (61, 62, 64.9):
        assert clocked.at(t)
    assert platform.fetches == 2  # not a fetch per launch while the platform is down
    assert clocked.at(65) and platform.fetches == 3
    jwks.documents[platform.path] = document
    assert clocked.at(70) and platform.fetches == 4
    assert clocked.at(129) and platform.fetches == 4  # fresh again for the 60 s it said


def test_concurrent_lookups_of_a_stale_set_share_one_revalidation(jwks: JwksServer) -> None:
    platform = _platform(jwks, etag=True, cache_control="max-age=60")
    clocked = Clocked(platform, ttl=300, min_ttl=10, max_ttl=86_400)
    assert clocked.at(0)
    clocked.now = T0 + 60

    async def many() -> list[Any]:
        lookups: list[Awaitable[Any]] = [clocked.keys.key(platform.jwks_url, platform.kid) for _ in range(20)]
        return await asyncio.gather(*lookups)

    assert len(asyncio.run(many())) == 20
    assert platform.fetches == 2 and platform.not_modified == 1


# -- end to end: launches against a running server ------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose JWKS floor is 1 s and ceiling 2 s (the default stays 300 s)."""
    srv = start_server(tmp_path_factory.mktemp("jwks-cache"), jwks_min_ttl=1, jwks_max_ttl=2)
    yield srv
    srv.stop()


def _launches(server: Server, platform: Platform) -> Callable[[], None]:
    user = CanvasUser()

    def launch() -> None:
        started = login(server, platform)
        done = post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding)
        assert done.status_code == 303, done.text

    return launch


def test_a_no_store_platform_is_fetched_at_most_once_per_floor(quick: Server, jwks: JwksServer) -> None:
    platform = register(quick, jwks)
    platform.cache_headers(cache_control="no-store")
    launch = _launches(quick, platform)
    for _ in range(3):
        launch()
    assert platform.fetches == 1
    time.sleep(1.1)
    launch()
    assert platform.fetches == 2


def test_a_platform_asking_for_a_year_is_fetched_again_at_the_ceiling(
    quick: Server, jwks: JwksServer
) -> None:
    platform = register(quick, jwks)
    platform.cache_headers(cache_control="max-age=31536000")
    launch = _launches(quick, platform)
    launch()
    launch()
    assert platform.fetches == 1
    time.sleep(2.1)
    launch()
    assert platform.fetches == 2


def test_a_launch_after_a_304_verifies_with_the_kept_keys(quick: Server, jwks: JwksServer) -> None:
    platform = register(quick, jwks)
    platform.cache_headers(cache_control="no-cache")
    jwks.etags.add(platform.path)
    launch = _launches(quick, platform)
    launch()
    time.sleep(1.1)
    launch()
    assert platform.fetches == 2 and platform.not_modified == 1
