"""One contract suite for the three store roles in ``stores/base.py``, written against the
contract only, so every backend answers to the same sentences.

Backends: ``sqlite``; ``postgres`` (one throwaway database per session, emptied before each
test); ``redis`` and ``redis-cluster`` (records in SQLite, sessions and single-use markers in a
throwaway Redis server or three-master Redis Cluster, flushed before each test). Each server
starts once per session, and only if a selected test needs it.

psycopg pools and redis asyncio clients belong to the event loop they were opened on, so each
test has ONE loop: the ``stores`` fixture opens the stores in it, ``run(body)`` runs every step
in it, and the fixture closes them in it. Adding a backend is one more entry in ``BACKENDS``, a
session fixture in ``_BACKEND_FIXTURES`` and, if need be, a branch in ``_open``.

Redis expires keys by TTL on its own clock and has nothing to purge, so the few tests that hand
the store a clock of their own or count what ``purge_expired`` deleted run on the SQL backends
(``@callers_clock``), each with a ``@redis_ttl`` twin that says why and pins the same promise.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from commons_session.domain.audit import AuditEvent
from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import (
    AccountSettings,
    Identity,
    Institution,
    Lti13Registration,
    Profile,
    SessionRecord,
)
from commons_session.errors import (
    CreateError,
    DuplicateInstitution,
    DuplicateRegistration,
    InstitutionNotFound,
    RegistrationNotFound,
    UserNotFound,
)
from commons_session.stores.base import Stores
from commons_session.stores.factory import make_stores

from ..backends import postgres_database, redis_cluster, redis_server

T = TypeVar("T")

GUID = "7db438071375c02373713c12c73869ff2f470b68:canvas-lms"
NOW = 1_800_000_000.0
PAST = 1_500_000_000.0  # 2017: a claim's expiry long gone by any real clock


BACKENDS = ["sqlite", "postgres", "redis", "redis-cluster"]
SQL = ["sqlite", "postgres"]
TTL = ["redis", "redis-cluster"]
IDLE = 3_600  # the idle timeout the stores are opened with (Redis derives key TTLs from it)
TIMEOUT = 5.0  # store_timeout

#: For tests that hand the store a clock of their own (``NOW`` is in 2027) or count what
#: ``purge_expired`` deleted: Redis expires keys by TTL on its own clock and has nothing to purge,
#: so these run on the SQL backends, and a ``@redis_ttl`` twin pins the same promise on Redis.
callers_clock = pytest.mark.parametrize("stores", SQL, indirect=True)
redis_ttl = pytest.mark.parametrize("stores", TTL, indirect=True)


@dataclass(frozen=True)
class Backend:
    """A server started once per session, and how to empty it before each test."""

    url: str
    reset: Callable[[], None]


@pytest.fixture(scope="session")
def postgres_backend() -> Iterator[Backend]:
    with postgres_database() as url:
        yield Backend(url, lambda: _empty_postgres(url))


@pytest.fixture(scope="session")
def redis_backend() -> Iterator[Backend]:
    with redis_server() as server, redis.Redis.from_url(server.url) as admin:
        yield Backend(server.url, lambda: admin.flushall())


@pytest.fixture(scope="session")
def redis_cluster_backend() -> Iterator[Backend]:
    with (
        redis_cluster() as url,
        RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://")) as admin,
    ):
        yield Backend(url, lambda: admin.flushall(target_nodes=RedisCluster.PRIMARIES))


def _empty_postgres(url: str) -> None:
    """DELETE (fast on small tables, unlike TRUNCATE), referencing tables first."""
    with psycopg.connect(url, autocommit=True) as conn:
        order: TopologicalSorter[str] = TopologicalSorter()
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        ):
            order.add(table)
        for referencing, referenced in conn.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text"
            " FROM pg_constraint WHERE contype = 'f'"
        ):
            if referencing != referenced:
                order.add(referenced, referencing)  # the referenced table goes after
        with conn.transaction():
            for table in order.static_order():
                conn.execute(f'DELETE FROM "{table}"')


_BACKEND_FIXTURES = {
    "postgres": "postgres_backend",
    "redis": "redis_backend",
    "redis-cluster": "redis_cluster_backend",
}


async def _open(backend: str, url: str | None, tmp_path: Path) -> Stores:
    """Built and opened inside the test's loop: pools and clients belong to the loop they start in."""
    sqlite_url = f"sqlite:///{tmp_path / 'contract.db'}"
    if backend == "postgres":
        assert url is not None
        stores = make_stores(url, idle_timeout=IDLE, timeout=TIMEOUT)
    else:  # records on SQLite; sessions and single-use markers on Redis if a URL is given
        stores = make_stores(sqlite_url, url, idle_timeout=IDLE, timeout=TIMEOUT)
    await stores.open()
    return stores


_loop: asyncio.AbstractEventLoop | None = None  # the running test's loop, owned by ``stores``


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Empty stores of the test's own (tests count rows and reuse keys), opened, used (``run``)
    and closed in ONE event loop of the test's own."""
    global _loop
    backend: str = request.param
    url = None
    if backend != "sqlite":  # started on first use, so that ``-k sqlite`` starts no server
        server: Backend = request.getfixturevalue(_BACKEND_FIXTURES[backend])
        server.reset()
        url = server.url
    loop = asyncio.new_event_loop()
    opened: Stores | None = None
    try:
        opened = loop.run_until_complete(_open(backend, url, tmp_path))
        _loop = loop
        yield opened
    finally:
        _loop = None
        try:
            if opened is not None:
                loop.run_until_complete(opened.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def run(body: Callable[[], Awaitable[T]]) -> T:
    """Run one step of a test in the test's event loop (the one ``stores`` opened them in)."""
    if _loop is None:
        raise RuntimeError("run() needs the stores fixture, which owns the test's event loop")

    async def main() -> T:
        return await body()

    return _loop.run_until_complete(main())


def _key() -> str:
    return "key-" + secrets.token_hex(6)


async def _institution(stores: Stores, secret: str = "s3cret") -> Institution:  # noqa: S107
    return await stores.records.add_institution(_key(), "Example U", secret, NOW)


def _identity(institution: Institution, lti_user_id: str | None = None) -> Identity:
    return Identity(institution.id, GUID, lti_user_id or secrets.token_hex(20))


def _profile(**changes: Any) -> Profile:
    base: dict[str, Any] = {
        "full_name": "Ada Lovelace",
        "roles": ("Instructor",),
        "canvas_user_id": "42",
        "locale": "en",
    }
    return Profile(**{**base, **changes})


def _session(
    user_id: str = "user-1",
    institution_id: int = 1,
    *,
    created_at: float = NOW,
    last_seen_at: float | None = None,
    expires_at: float | None = None,
) -> tuple[str, SessionRecord]:
    session_id = new_session_id()
    record = SessionRecord(
        id_hash=hash_id(session_id),
        user_id=user_id,
        institution_id=institution_id,
        contents={"userId": user_id, "roles": ["Instructor"], "userFullName": "Ada Lovelace"},
        created_at=created_at,
        last_seen_at=created_at if last_seen_at is None else last_seen_at,
        expires_at=created_at + 43_200 if expires_at is None else expires_at,
        user_agent="pytest",
    )
    return session_id, record


def _fields(record: SessionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in SessionRecord.__dataclass_fields__}


# -- RecordStore: institutions --------------------------------------------------------------


def test_added_institution_is_found_by_exactly_its_key(stores: Stores) -> None:
    async def body() -> None:
        key = _key()
        added = await stores.records.add_institution(key, "Example U", "s3cret", NOW)
        assert (added.consumer_key, added.name, added.secrets) == (key, "Example U", ("s3cret",))
        found = await stores.records.get_institution(key)
        assert found is not None and found.id == added.id and found.secrets == ("s3cret",)
        assert await stores.records.get_institution(key.upper()) is None
        assert await stores.records.get_institution(key + " ") is None

    run(body)


def test_duplicate_consumer_key_raises_duplicate_institution_and_keeps_the_first(stores: Stores) -> None:
    async def body() -> None:
        key = _key()
        await stores.records.add_institution(key, "First", "first-secret", NOW)
        with pytest.raises(DuplicateInstitution):
            await stores.records.add_institution(key, "Second", "second-secret", NOW)
        kept = await stores.records.get_institution(key)
        assert kept is not None and (kept.name, kept.secrets) == ("First", ("first-secret",))

    run(body)


def test_get_unknown_institution_returns_none(stores: Stores) -> None:
    assert run(lambda: stores.records.get_institution("no-such-key")) is None


def test_list_institutions_is_ordered_by_consumer_key(stores: Stores) -> None:
    async def body() -> None:
        for key in ("key-c", "key-a", "key-b"):
            await stores.records.add_institution(key, key.upper(), "s", NOW)
        assert [i.consumer_key for i in await stores.records.list_institutions()] == [
            "key-a",
            "key-b",
            "key-c",
        ]

    run(body)


def test_remove_unknown_institution_raises_institution_not_found(stores: Stores) -> None:
    with pytest.raises(InstitutionNotFound):
        run(lambda: stores.records.remove_institution("no-such-key"))


def test_remove_institution_deletes_its_users_launches_and_acceptances(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        other = await _institution(stores)
        identity = _identity(institution)
        user = await stores.records.record_launch(identity, _profile(), {}, NOW)
        await stores.records.accept_terms(user.id, "v1", NOW)
        survivor = await stores.records.record_launch(_identity(other), _profile(), {}, NOW)

        removed = await stores.records.remove_institution(institution.consumer_key)

        assert removed.id == institution.id
        assert await stores.records.get_institution(institution.consumer_key) is None
        assert await stores.records.find_user(identity) is None
        assert await stores.records.get_user(user.id) is None
        assert await stores.records.count_launches(user.id) == 0
        assert not await stores.records.has_accepted(user.id, "v1")
        assert await stores.records.get_user(survivor.id) is not None

    run(body)


def test_rotation_keeps_exactly_two_secrets_newest_first_and_finish_leaves_one(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores, secret="one")
        key = institution.consumer_key

        rotated = await stores.records.rotate_secret(key, "two")
        assert rotated.secrets == ("two", "one")
        rotated = await stores.records.rotate_secret(key, "three")
        assert rotated.secrets == ("three", "two")
        stored = await stores.records.get_institution(key)
        assert stored is not None and stored.secrets == ("three", "two")

        finished = await stores.records.finish_rotation(key)
        assert finished.secrets == ("three",)
        stored = await stores.records.get_institution(key)
        assert stored is not None and stored.secrets == ("three",)

    run(body)


def test_rotation_of_unknown_institution_raises_institution_not_found(stores: Stores) -> None:
    with pytest.raises(InstitutionNotFound):
        run(lambda: stores.records.rotate_secret("no-such-key", "new"))
    with pytest.raises(InstitutionNotFound):
        run(lambda: stores.records.finish_rotation("no-such-key"))


def test_update_settings_replaces_the_account_settings(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        assert institution.settings == AccountSettings()
        wanted = AccountSettings(can_share_public=False, show_state_standards=True, state_standard="CA")
        updated = await stores.records.update_settings(institution.consumer_key, wanted)
        assert updated.settings == wanted
        stored = await stores.records.get_institution(institution.consumer_key)
        assert stored is not None and stored.settings == wanted
        with pytest.raises(InstitutionNotFound):
            await stores.records.update_settings("no-such-key", wanted)

    run(body)


# -- RecordStore: users, launches, terms ----------------------------------------------------


def test_record_launch_upserts_one_user_per_identity_updating_profile_and_counting_launches(
    stores: Stores,
) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        identity = _identity(institution)
        first = await stores.records.record_launch(identity, _profile(full_name="Ada"), {"n": 1}, NOW)
        assert await stores.records.count_launches(first.id) == 1

        second = await stores.records.record_launch(
            identity, _profile(full_name="Ada King", roles=("Learner",)), {"n": 2}, NOW + 10
        )
        assert second.id == first.id
        assert second.profile.full_name == "Ada King" and second.profile.roles == ("Learner",)
        assert second.last_launch_at == NOW + 10
        assert await stores.records.count_launches(first.id) == 2

        found = await stores.records.find_user(identity)
        assert found is not None and found.id == first.id
        assert found.profile.full_name == "Ada King"
        by_id = await stores.records.get_user(first.id)
        assert by_id is not None and by_id.identity == identity

    run(body)


def test_concurrent_launches_of_one_identity_yield_one_user(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        identity = _identity(institution)
        users = await asyncio.gather(
            *(stores.records.record_launch(identity, _profile(), {"n": n}, NOW + n) for n in range(10))
        )
        assert len({u.id for u in users}) == 1
        assert await stores.records.count_launches(users[0].id) == 10

    run(body)


def test_same_lti_user_id_in_two_institutions_is_two_users(stores: Stores) -> None:
    async def body() -> None:
        a, b = await _institution(stores), await _institution(stores)
        lti_user_id = secrets.token_hex(20)
        in_a = await stores.records.record_launch(_identity(a, lti_user_id), _profile(), {}, NOW)
        in_b = await stores.records.record_launch(_identity(b, lti_user_id), _profile(), {}, NOW)
        assert in_a.id != in_b.id
        found_a = await stores.records.find_user(_identity(a, lti_user_id))
        assert found_a is not None and found_a.id == in_a.id
        assert await stores.records.count_launches(in_a.id) == 1
        assert await stores.records.count_launches(in_b.id) == 1

    run(body)


def test_find_user_needs_the_whole_identity(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        identity = _identity(institution)
        await stores.records.record_launch(identity, _profile(), {}, NOW)
        other_guid = Identity(identity.institution_id, "other-guid", identity.lti_user_id)
        assert await stores.records.find_user(other_guid) is None
        assert await stores.records.get_user("no-such-user") is None
        assert await stores.records.count_launches("no-such-user") == 0

    run(body)


def test_accept_terms_is_idempotent_and_recorded_per_version(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        user = await stores.records.record_launch(_identity(institution), _profile(), {}, NOW)
        assert not await stores.records.has_accepted(user.id, "v1")

        await stores.records.accept_terms(user.id, "v1", NOW)
        await stores.records.accept_terms(user.id, "v1", NOW + 5)  # not an error

        assert await stores.records.has_accepted(user.id, "v1")
        assert not await stores.records.has_accepted(user.id, "v2")
        await stores.records.accept_terms(user.id, "v2", NOW + 6)
        assert await stores.records.has_accepted(user.id, "v2")

    run(body)


def test_find_user_accepted_answers_find_user_and_has_accepted_together(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        identity, other = _identity(institution), _identity(institution)
        user = await stores.records.record_launch(identity, _profile(), {}, NOW)
        await stores.records.record_launch(other, _profile(), {}, NOW)
        assert await stores.records.find_user_accepted(_identity(institution), "v1") is None
        assert await stores.records.find_user_accepted(identity, "v1") == (user, False)

        await stores.records.accept_terms(user.id, "v1", NOW)
        assert await stores.records.find_user_accepted(identity, "v1") == (user, True)
        assert await stores.records.find_user_accepted(identity, "v2") == (user, False)
        found = await stores.records.find_user_accepted(other, "v1")
        assert found is not None and found[0].identity == other and found[1] is False
        disabled = await stores.records.set_user_disabled(user.id, True, NOW)
        assert await stores.records.find_user_accepted(identity, "v1") == (disabled, True)

    run(body)


def test_get_institution_and_user_answers_both_lookups_and_never_a_user_of_another_institution(
    stores: Stores,
) -> None:
    async def body() -> None:
        records = stores.records
        mine, theirs = await _institution(stores), await _institution(stores, secret="other")
        identity = _identity(mine)
        user = await records.record_launch(identity, _profile(), {}, NOW)
        # The same Canvas user id and guid at another institution is another person.
        twin = await records.record_launch(
            Identity(theirs.id, GUID, identity.lti_user_id), _profile(full_name="Twin"), {}, NOW
        )
        await records.accept_terms(twin.id, "v1", NOW)
        lti = identity.lti_user_id

        assert await records.get_institution_and_user("no-such-key", GUID, lti, "v1") == (None, None)
        assert await records.get_institution_and_user(mine.consumer_key, GUID, None, "v1") == (mine, None)
        assert await records.get_institution_and_user(mine.consumer_key, GUID, "nobody", "v1") == (mine, None)
        assert await records.get_institution_and_user(mine.consumer_key, "other-guid", lti, "v1") == (
            mine,
            None,
        )
        assert await records.get_institution_and_user(mine.consumer_key, GUID, lti, "v1") == (
            mine,
            (user, False),
        )
        await records.accept_terms(user.id, "v1", NOW)
        assert await records.get_institution_and_user(mine.consumer_key, GUID, lti, "v1") == (
            mine,
            (user, True),
        )
        assert await records.get_institution_and_user(mine.consumer_key, GUID, lti, "v2") == (
            mine,
            (user, False),
        )
        assert await records.get_institution_and_user(theirs.consumer_key, GUID, lti, "v1") == (
            theirs,
            (twin, True),
        )
        # What changed is seen at once: a rotated secret, a disabled user.
        rotated = await records.rotate_secret(mine.consumer_key, "new-secret")
        disabled = await records.set_user_disabled(user.id, True, NOW)
        found = await records.get_institution_and_user(mine.consumer_key, GUID, lti, "v1")
        assert found == (rotated, (disabled, True)) and found[0] is not None
        assert found[0].secrets == ("new-secret", "s3cret")

    run(body)


def test_set_institution_disabled_marks_only_that_institution_until_enabled_again(stores: Stores) -> None:
    async def body() -> None:
        institution, other = await _institution(stores), await _institution(stores)
        assert not institution.disabled
        disabled = await stores.records.set_institution_disabled(institution.consumer_key, True, NOW + 1)
        assert disabled.id == institution.id and disabled.disabled_at == NOW + 1
        found = await stores.records.get_institution(institution.consumer_key)
        assert found is not None and found.disabled and found.secrets == institution.secrets
        bystander = await stores.records.get_institution(other.consumer_key)
        assert bystander is not None and not bystander.disabled
        again = await stores.records.set_institution_disabled(institution.consumer_key, True, NOW + 2)
        assert again.disabled_at == NOW + 1  # twice keeps the first time
        listed = {i.consumer_key: i.disabled for i in await stores.records.list_institutions()}
        assert listed[institution.consumer_key] and not listed[other.consumer_key]
        enabled = await stores.records.set_institution_disabled(institution.consumer_key, False, NOW + 3)
        assert not enabled.disabled
        with pytest.raises(InstitutionNotFound):
            await stores.records.set_institution_disabled("no-such-key", True, NOW)

    run(body)


def test_set_user_disabled_marks_only_that_user_until_enabled_again(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        identity = _identity(institution)
        user = await stores.records.record_launch(identity, _profile(), {}, NOW)
        other = await stores.records.record_launch(_identity(institution), _profile(), {}, NOW)
        assert not user.disabled

        disabled = await stores.records.set_user_disabled(user.id, True, NOW + 1)
        assert disabled.id == user.id and disabled.disabled
        found, by_id = await stores.records.find_user(identity), await stores.records.get_user(user.id)
        assert found is not None and found.disabled and by_id is not None and by_id.disabled
        bystander = await stores.records.get_user(other.id)
        assert bystander is not None and not bystander.disabled
        assert (await stores.records.set_user_disabled(user.id, True, NOW + 2)).disabled  # twice is fine
        # A launch recorded meanwhile (one that passed its checks before the disable) keeps it.
        relaunched = await stores.records.record_launch(identity, _profile(full_name="Ada"), {}, NOW + 3)
        assert relaunched.disabled

        enabled = await stores.records.set_user_disabled(user.id, False, NOW + 4)
        assert enabled.id == user.id and not enabled.disabled
        again = await stores.records.get_user(user.id)
        assert again is not None and not again.disabled
        with pytest.raises(UserNotFound):
            await stores.records.set_user_disabled("no-such-user", True, NOW)

    run(body)


# -- RecordStore: audit events --------------------------------------------------------------


def _event(event: str = "session_created", at: float = NOW, **fields: Any) -> AuditEvent:
    return AuditEvent(event=event, at=at, **fields)


def test_audit_events_come_back_newest_first_with_every_field(stores: Stores) -> None:
    async def body() -> None:
        full = _event(
            "session_ended",
            NOW + 1,
            reason="logout",
            user_id="user-1",
            institution_id=7,
            session_hash="0123456789abcdef",
            request_id="req-1",
            detail={"sessions": 2, "via": "jwt"},
        )
        bare = _event("launch", NOW + 1)  # same time, added later
        await stores.records.add_audit_event(_event(at=NOW))
        await stores.records.add_audit_event(full)
        await stores.records.add_audit_event(bare)

        found = await stores.records.list_audit_events()
        assert found == [bare, full, _event(at=NOW)]

    run(body)


def test_audit_filters_combine_and_since_is_inclusive(stores: Stores) -> None:
    async def body() -> None:
        events = [
            _event("session_created", NOW, user_id="u1", institution_id=1),
            _event("session_ended", NOW + 10, reason="logout", user_id="u1", institution_id=1),
            _event("session_created", NOW + 20, user_id="u2", institution_id=1),
            _event("verification_failed", NOW + 30, reason="invalid_token_signature", institution_id=2),
        ]
        for event in events:
            await stores.records.add_audit_event(event)
        records = stores.records

        assert await records.list_audit_events(user_id="u1") == [events[1], events[0]]
        assert await records.list_audit_events(institution_id=2) == [events[3]]
        assert await records.list_audit_events(event="session_created") == [events[2], events[0]]
        assert await records.list_audit_events(since=NOW + 10) == [events[3], events[2], events[1]]
        assert await records.list_audit_events(user_id="u1", event="session_created") == [events[0]]
        assert await records.list_audit_events(institution_id=1, since=NOW + 15) == [events[2]]
        assert await records.list_audit_events(user_id="nobody") == []
        assert await records.list_audit_events(limit=2) == [events[3], events[2]]

    run(body)


def test_purge_audit_events_deletes_only_older_ones_in_batches(stores: Stores) -> None:
    async def body() -> None:
        for n in range(5):
            await stores.records.add_audit_event(_event(at=NOW + n))
        kept = [_event("launch", NOW + 100), _event("launch", NOW + 101)]
        for event in kept:
            await stores.records.add_audit_event(event)

        assert await stores.records.purge_audit_events(NOW + 100, limit=3) == 3
        assert await stores.records.purge_audit_events(NOW + 100, limit=3) == 2
        assert await stores.records.purge_audit_events(NOW + 100, limit=3) == 0
        assert await stores.records.list_audit_events() == kept[::-1]

    run(body)


def test_audit_events_outlive_the_institution_and_user_they_name(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        user = await stores.records.record_launch(_identity(institution), _profile(), {}, NOW)
        event = _event("launch", user_id=user.id, institution_id=institution.id)
        await stores.records.add_audit_event(event)

        await stores.records.remove_institution(institution.consumer_key)

        assert await stores.records.get_user(user.id) is None
        assert await stores.records.list_audit_events(user_id=user.id) == [event]

    run(body)


# -- RecordStore: LTI 1.3 registrations ----------------------------------------------------


async def _register(
    stores: Stores, institution: Institution, issuer: str, client_id: str, *deployments: str
) -> Lti13Registration:
    return await stores.records.add_lti13_registration(
        institution.consumer_key,
        issuer=issuer,
        client_id=client_id,
        deployment_ids=deployments or ("1:a",),
        jwks_url=f"{issuer}/jwks",
        auth_url=f"{issuer}/auth",
        now=NOW,
    )


def test_registration_is_found_by_exactly_its_issuer_and_client_id(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        added = await _register(stores, institution, "https://canvas.example.edu", "100", "1:a", "2:b")
        assert (added.institution_id, added.consumer_key) == (institution.id, institution.consumer_key)
        assert added.deployment_ids == ("1:a", "2:b")
        assert (added.jwks_url, added.auth_url) == (
            "https://canvas.example.edu/jwks",
            "https://canvas.example.edu/auth",
        )
        found = await stores.records.get_lti13_registration("https://canvas.example.edu", "100")
        assert found == added
        assert await stores.records.get_lti13_registration("https://canvas.example.edu", "1000") is None
        assert await stores.records.get_lti13_registration("https://canvas.example.edu/", "100") is None

    run(body)


def test_adding_a_registration_again_adds_deployments_and_replaces_urls(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        first = await _register(stores, institution, "https://a.example.edu", "100", "1:a", "2:b")
        again = await stores.records.add_lti13_registration(
            institution.consumer_key,
            issuer="https://a.example.edu",
            client_id="100",
            deployment_ids=("2:b", "3:c"),
            jwks_url="https://b.example.edu/jwks",
            auth_url="https://b.example.edu/auth",
            now=NOW + 1,
        )
        assert again.id == first.id and again.created_at == first.created_at
        assert again.deployment_ids == ("1:a", "2:b", "3:c")
        assert (again.jwks_url, again.auth_url) == (
            "https://b.example.edu/jwks",
            "https://b.example.edu/auth",
        )

    run(body)


def test_a_registration_of_another_institution_raises_duplicate_registration(stores: Stores) -> None:
    async def body() -> None:
        owner, other = await _institution(stores), await _institution(stores)
        await _register(stores, owner, "https://a.example.edu", "100", "1:a")
        with pytest.raises(DuplicateRegistration):
            await _register(stores, other, "https://a.example.edu", "100", "9:z")
        kept = await stores.records.get_lti13_registration("https://a.example.edu", "100")
        assert kept is not None and kept.institution_id == owner.id and kept.deployment_ids == ("1:a",)

    run(body)


def test_registering_for_an_unknown_institution_raises_institution_not_found(stores: Stores) -> None:
    async def body() -> None:
        with pytest.raises(InstitutionNotFound):
            await stores.records.add_lti13_registration(
                "no-such-key",
                issuer="https://a.example.edu",
                client_id="100",
                deployment_ids=("1:a",),
                jwks_url="https://a.example.edu/jwks",
                auth_url="https://a.example.edu/auth",
                now=NOW,
            )
        assert await stores.records.list_lti13_registrations() == []

    run(body)


def test_list_registrations_is_ordered_and_filters_by_issuer(stores: Stores) -> None:
    async def body() -> None:
        institution = await _institution(stores)
        for issuer, client_id in (("https://b.example.edu", "1"), ("https://a.example.edu", "2"),
                                  ("https://a.example.edu", "1")):  # fmt: skip
            await _register(stores, institution, issuer, client_id)
        listed = [(r.issuer, r.client_id) for r in await stores.records.list_lti13_registrations()]
        assert listed == [
            ("https://a.example.edu", "1"),
            ("https://a.example.edu", "2"),
            ("https://b.example.edu", "1"),
        ]
        only_a = await stores.records.list_lti13_registrations("https://a.example.edu")
        assert [r.client_id for r in only_a] == ["1", "2"]
        assert await stores.records.list_lti13_registrations("https://c.example.edu") == []

    run(body)


def test_remove_registration_and_removing_the_institution_removes_its_registrations(stores: Stores) -> None:
    async def body() -> None:
        institution, other = await _institution(stores), await _institution(stores)
        await _register(stores, institution, "https://a.example.edu", "1")
        await _register(stores, institution, "https://a.example.edu", "2")
        await _register(stores, other, "https://a.example.edu", "3")

        removed = await stores.records.remove_lti13_registration("https://a.example.edu", "1")
        assert removed.client_id == "1"
        with pytest.raises(RegistrationNotFound):
            await stores.records.remove_lti13_registration("https://a.example.edu", "1")

        await stores.records.remove_institution(institution.consumer_key)
        left = [r.client_id for r in await stores.records.list_lti13_registrations()]
        assert left == ["3"]

    run(body)


# -- RecordStore: LTI Dynamic Registration (pending registrations) -------------------------


async def _pending(stores: Stores, issuer: str, client_id: str, *deployments: str) -> Lti13Registration:
    return await stores.records.add_pending_lti13_registration(
        issuer=issuer,
        client_id=client_id,
        deployment_ids=deployments,
        jwks_url=f"{issuer}/jwks",
        auth_url=f"{issuer}/auth",
        token_url=f"{issuer}/token",
        now=NOW,
    )


def test_a_pending_registration_has_no_institution_and_is_listed_and_counted(stores: Stores) -> None:
    async def body() -> None:
        added = await _pending(stores, "https://a.example.edu", "100", "1:a")
        assert added.pending and added.institution_id is None and added.consumer_key is None
        assert (added.token_url, added.registered_at, added.deployment_ids) == (
            "https://a.example.edu/token",
            NOW,
            ("1:a",),
        )
        assert await stores.records.get_lti13_registration("https://a.example.edu", "100") == added
        assert await stores.records.list_lti13_registrations() == [added]
        assert await stores.records.count_pending_lti13_registrations() == 1
        none = await _pending(stores, "https://a.example.edu", "200")
        assert none.deployment_ids == ()
        assert await stores.records.count_pending_lti13_registrations() == 2

    run(body)


def test_binding_attaches_a_pending_registration_once_and_only_to_one_institution(stores: Stores) -> None:
    async def body() -> None:
        owner, other = await _institution(stores), await _institution(stores)
        await _pending(stores, "https://a.example.edu", "100", "1:a")
        bound = await stores.records.bind_lti13_registration(
            "https://a.example.edu", "100", owner.consumer_key
        )
        assert (bound.institution_id, bound.consumer_key, bound.pending) == (
            owner.id,
            owner.consumer_key,
            False,
        )
        assert bound.token_url == "https://a.example.edu/token" and bound.deployment_ids == ("1:a",)
        assert await stores.records.count_pending_lti13_registrations() == 0
        again = await stores.records.bind_lti13_registration(
            "https://a.example.edu", "100", owner.consumer_key, deployment_id="2:b"
        )
        assert again.institution_id == owner.id and again.deployment_ids == ("1:a", "2:b")
        with pytest.raises(DuplicateRegistration):
            await stores.records.bind_lti13_registration("https://a.example.edu", "100", other.consumer_key)
        kept = await stores.records.get_lti13_registration("https://a.example.edu", "100")
        assert kept is not None and kept.institution_id == owner.id

    run(body)


def test_binding_an_unknown_registration_or_to_an_unknown_key_changes_nothing(stores: Stores) -> None:
    async def body() -> None:
        owner = await _institution(stores)
        with pytest.raises(RegistrationNotFound):
            await stores.records.bind_lti13_registration("https://a.example.edu", "100", owner.consumer_key)
        await _pending(stores, "https://a.example.edu", "100")
        with pytest.raises(InstitutionNotFound):
            await stores.records.bind_lti13_registration("https://a.example.edu", "100", "no-such-key")
        found = await stores.records.get_lti13_registration("https://a.example.edu", "100")
        assert found is not None and found.pending

    run(body)


def test_a_platform_registering_again_updates_its_pending_row_but_never_a_bound_one(stores: Stores) -> None:
    async def body() -> None:
        owner = await _institution(stores)
        first = await _pending(stores, "https://a.example.edu", "100", "1:a")
        again = await stores.records.add_pending_lti13_registration(
            issuer="https://a.example.edu",
            client_id="100",
            deployment_ids=("2:b",),
            jwks_url="https://b.example.edu/jwks",
            auth_url="https://b.example.edu/auth",
            token_url=None,
            now=NOW + 5,
        )
        assert again.id == first.id and again.pending
        assert (again.deployment_ids, again.jwks_url, again.token_url, again.registered_at) == (
            ("1:a", "2:b"),
            "https://b.example.edu/jwks",
            None,
            NOW + 5,
        )
        await _register(stores, owner, "https://c.example.edu", "300", "9:z")
        with pytest.raises(DuplicateRegistration):
            await _pending(stores, "https://c.example.edu", "300", "evil")
        kept = await stores.records.get_lti13_registration("https://c.example.edu", "300")
        assert kept is not None and kept.institution_id == owner.id and kept.deployment_ids == ("9:z",)
        assert kept.jwks_url == "https://c.example.edu/jwks" and kept.registered_at is None
        # add_lti13_registration (the operator's) must not take a pending row over either.
        with pytest.raises(DuplicateRegistration):
            await _register(stores, owner, "https://a.example.edu", "100")

    run(body)


def test_removing_the_bound_institution_removes_the_registration_but_not_pending_ones(stores: Stores) -> None:
    async def body() -> None:
        owner = await _institution(stores)
        await _pending(stores, "https://a.example.edu", "1")
        await _pending(stores, "https://a.example.edu", "2")
        await stores.records.bind_lti13_registration("https://a.example.edu", "1", owner.consumer_key)
        await stores.records.remove_institution(owner.consumer_key)
        left = [(r.client_id, r.pending) for r in await stores.records.list_lti13_registrations()]
        assert left == [("2", True)]
        removed = await stores.records.remove_lti13_registration("https://a.example.edu", "2")
        assert removed.pending and await stores.records.list_lti13_registrations() == []

    run(body)


# -- SessionStore ---------------------------------------------------------------------------


def test_created_session_reads_back_unchanged(stores: Stores) -> None:
    async def body() -> None:
        session_id, record = _session()
        await stores.sessions.create(record)
        assert await stores.sessions.get(hash_id(session_id)) == record
        assert await stores.sessions.get(hash_id(new_session_id())) is None

    run(body)


def test_creating_a_stored_id_hash_raises_create_error_and_keeps_the_first(stores: Stores) -> None:
    async def body() -> None:
        _, record = _session(user_id="first")
        await stores.sessions.create(record)
        _, clash = _session(user_id="second")
        with pytest.raises(CreateError):
            await stores.sessions.create(SessionRecord(**{**_fields(clash), "id_hash": record.id_hash}))
        assert await stores.sessions.get(record.id_hash) == record

    run(body)


def test_touch_slides_last_seen(stores: Stores) -> None:
    async def body() -> None:
        _, record = _session()
        await stores.sessions.create(record)
        assert await stores.sessions.touch(record.id_hash, NOW + 120) is True
        touched = await stores.sessions.get(record.id_hash)
        assert touched is not None and touched.last_seen_at == NOW + 120
        assert touched.expires_at == record.expires_at

    run(body)


def test_touch_on_a_missing_session_returns_false_and_writes_nothing(stores: Stores) -> None:
    async def body() -> None:
        _, never = _session()
        assert await stores.sessions.touch(never.id_hash, NOW) is False
        assert await stores.sessions.get(never.id_hash) is None

        _, ended = _session()
        await stores.sessions.create(ended)
        assert await stores.sessions.delete(ended.id_hash) is True
        assert await stores.sessions.touch(ended.id_hash, NOW + 1) is False
        assert await stores.sessions.get(ended.id_hash) is None  # never resurrected

    run(body)


def test_delete_returns_whether_the_session_existed(stores: Stores) -> None:
    async def body() -> None:
        _, record = _session()
        _, other = _session()
        await stores.sessions.create(record)
        await stores.sessions.create(other)
        assert await stores.sessions.delete(record.id_hash) is True
        assert await stores.sessions.get(record.id_hash) is None
        assert await stores.sessions.delete(record.id_hash) is False
        assert await stores.sessions.get(other.id_hash) == other

    run(body)


def test_delete_for_institution_ends_only_that_institutions_sessions(stores: Stores) -> None:
    async def body() -> None:
        mine = [_session(institution_id=7)[1] for _ in range(3)]
        theirs = _session(institution_id=8)[1]
        for record in [*mine, theirs]:
            await stores.sessions.create(record)

        assert await stores.sessions.delete_for_institution(7) == 3

        for record in mine:
            assert await stores.sessions.get(record.id_hash) is None
        assert await stores.sessions.get(theirs.id_hash) == theirs
        assert await stores.sessions.delete_for_institution(7) == 0

    run(body)


@callers_clock
def test_purge_expired_deletes_sessions_past_their_absolute_end(stores: Stores) -> None:
    async def body() -> None:
        now, idle = NOW + 1_000, 3_600.0
        _, past = _session(created_at=NOW, last_seen_at=now - 10, expires_at=now - 1)
        _, live = _session(created_at=NOW, last_seen_at=now - 10, expires_at=now + 1_000)
        await stores.sessions.create(past)
        await stores.sessions.create(live)

        assert await stores.sessions.purge_expired(now, idle) == 1

        assert await stores.sessions.get(past.id_hash) is None
        assert await stores.sessions.get(live.id_hash) == live

    run(body)


@callers_clock
def test_purge_expired_deletes_sessions_idle_past_the_timeout(stores: Stores) -> None:
    async def body() -> None:
        now, idle = NOW + 10_000, 3_600.0
        _, idle_record = _session(created_at=NOW, last_seen_at=now - idle - 1, expires_at=now + 10_000)
        _, recent = _session(created_at=NOW, last_seen_at=now - idle + 60, expires_at=now + 10_000)
        await stores.sessions.create(idle_record)
        await stores.sessions.create(recent)

        assert await stores.sessions.purge_expired(now, idle) == 1

        assert await stores.sessions.get(idle_record.id_hash) is None
        assert await stores.sessions.get(recent.id_hash) == recent
        assert await stores.sessions.purge_expired(now, idle) == 0

    run(body)


@redis_ttl
def test_ttl_sessions_end_by_themselves_at_their_absolute_or_idle_end_so_purge_has_nothing_to_do(
    stores: Stores,
) -> None:
    """Twin of the ``purge_expired`` session tests, which Redis cannot meet as written: it ends a
    session when its key's TTL runs out (the earlier of ``expires_at`` and ``last_seen_at`` plus
    the idle timeout, on Redis' own clock), so ``purge_expired`` finds nothing and returns 0.
    The same promise with real time: ended sessions are gone, live ones stay, a touch pushes the
    idle end, and the lists drop the ended ones."""

    async def body() -> None:
        now = time.time()
        _, absolute = _session(created_at=now - 10, last_seen_at=now, expires_at=now + 0.3)
        _, idle = _session(created_at=now - IDLE, last_seen_at=now - IDLE + 0.3, expires_at=now + 1_000)
        _, touched = _session(created_at=now - IDLE, last_seen_at=now - IDLE + 0.3, expires_at=now + 1_000)
        _, live = _session(created_at=now, expires_at=now + 1_000)
        for record in (absolute, idle, touched, live):
            await stores.sessions.create(record)
        assert await stores.sessions.touch(touched.id_hash, now) is True
        assert None not in [await stores.sessions.get(r.id_hash) for r in (absolute, idle, touched, live)]

        await asyncio.sleep(0.6)

        assert await stores.sessions.get(absolute.id_hash) is None
        assert await stores.sessions.get(idle.id_hash) is None
        assert await stores.sessions.get(live.id_hash) == live
        kept = await stores.sessions.get(touched.id_hash)
        assert kept is not None and kept.last_seen_at == now
        assert await stores.sessions.purge_expired(time.time(), IDLE) == 0
        assert [r.id_hash for r in await stores.sessions.list_for_user("user-1")] == [
            touched.id_hash,
            live.id_hash,
        ]
        assert len(await stores.sessions.list_for_institution(1)) == 2

    run(body)


def test_delete_for_user_ends_every_session_of_the_user_but_the_kept_one(stores: Stores) -> None:
    async def body() -> None:
        mine = [_session(user_id="u1", institution_id=7)[1] for _ in range(3)]
        _, theirs = _session(user_id="u2", institution_id=7)
        for record in [*mine, theirs]:
            await stores.sessions.create(record)

        assert await stores.sessions.delete_for_user("u1", keep=mine[1].id_hash) == 2
        assert [await stores.sessions.get(r.id_hash) for r in mine] == [None, mine[1], None]
        # Keeping another user's session neither spares the user's last one nor ends theirs.
        assert await stores.sessions.delete_for_user("u1", keep=theirs.id_hash) == 1
        assert await stores.sessions.get(mine[1].id_hash) is None
        assert await stores.sessions.get(theirs.id_hash) == theirs
        assert await stores.sessions.delete_for_user("u1") == 0
        assert await stores.sessions.delete_for_user("nobody") == 0
        assert await stores.sessions.delete_for_user("u2") == 1
        assert await stores.sessions.get(theirs.id_hash) is None

    run(body)


def test_list_for_user_and_for_institution_give_their_stored_sessions_oldest_first(stores: Stores) -> None:
    async def body() -> None:
        _, newest = _session("u1", 7, created_at=NOW + 2)
        _, oldest = _session("u1", 7, created_at=NOW)
        _, middle = _session("u1", 7, created_at=NOW + 1)
        _, colleague = _session("u2", 7, created_at=NOW + 3)
        _, abroad = _session("u3", 8, created_at=NOW)
        _, ended = _session("u1", 7, created_at=NOW + 4)
        for record in (newest, oldest, middle, colleague, abroad, ended):
            await stores.sessions.create(record)
        assert await stores.sessions.delete(ended.id_hash)

        assert await stores.sessions.list_for_user("u1") == [oldest, middle, newest]
        assert await stores.sessions.list_for_institution(7) == [oldest, middle, newest, colleague]
        assert await stores.sessions.list_for_institution(8) == [abroad]
        assert await stores.sessions.list_for_user("nobody") == []
        assert await stores.sessions.list_for_institution(9) == []

        assert await stores.sessions.delete_for_institution(7) == 4
        assert await stores.sessions.list_for_user("u1") == []
        assert await stores.sessions.list_for_institution(8) == [abroad]

    run(body)


@callers_clock
def test_purge_expired_deletes_sessions_in_batches_of_at_most_limit(stores: Stores) -> None:
    """Ends count as expired from the very instant they are reached, as the service reads them."""

    async def body() -> None:
        now, idle = NOW + 10_000, 3_600.0
        expired = [
            _session(created_at=NOW, last_seen_at=now - 10, expires_at=now - 1)[1],  # absolute
            _session(created_at=NOW, last_seen_at=now - idle - 1, expires_at=now + 10)[1],  # idle
            _session(created_at=NOW, last_seen_at=now - idle - 1, expires_at=now - 1)[1],  # both
            _session(created_at=NOW, last_seen_at=now - idle, expires_at=now + 10)[1],  # idle, just
            _session(created_at=NOW, last_seen_at=now - 10, expires_at=now)[1],  # absolute, just
        ]
        live = [
            _session(created_at=NOW, last_seen_at=now - idle + 1, expires_at=now + 1)[1] for _ in range(2)
        ]
        for record in [*expired, *live]:
            await stores.sessions.create(record)

        assert [await stores.sessions.purge_expired(now, idle, limit=2) for _ in range(4)] == [2, 2, 1, 0]

        assert [await stores.sessions.get(r.id_hash) for r in expired] == [None] * 5
        assert [await stores.sessions.get(r.id_hash) for r in live] == live

    run(body)


# -- OnceStore ------------------------------------------------------------------------------


def test_a_claim_stands_until_it_expires(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        assert await stores.once.claim("oauth_nonce", key, NOW + 100, NOW) is True
        assert await stores.once.claim("oauth_nonce", key, NOW + 200, NOW + 1) is False
        assert await stores.once.claim("oauth_nonce", key, NOW + 200, NOW + 99) is False

    run(body)


def test_namespaces_do_not_share_claims(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        assert await stores.once.claim("oauth_nonce", key, NOW + 100, NOW) is True
        assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True

    run(body)


def test_an_expired_claim_can_be_claimed_again(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True
        assert await stores.once.claim("jwt", key, NOW + 400, NOW + 101) is True
        # ... and the new claim stands until its own expiry
        assert await stores.once.claim("jwt", key, NOW + 500, NOW + 300) is False

    run(body)


def test_a_claim_stands_until_exactly_its_expiry_by_the_callers_clock_on_every_store(stores: Stores) -> None:
    """Single-use retention is the same on every store: a claim stands while the caller's ``now``
    is before its ``expires_at``, and not from then on, whatever the store's own clock says
    (Redis' is years from both of these). A claim that expires as it is made stands for no one."""

    async def body() -> None:
        for start in (PAST, NOW):
            key = secrets.token_hex(20)
            assert await stores.once.claim("jwt", key, start + 100, start) is True
            assert await stores.once.claim("jwt", key, start + 500, start + 1) is False
            assert await stores.once.claim("jwt", key, start + 500, start + 99.999) is False
            assert await stores.once.claim("jwt", key, start + 200, start + 100) is True
            assert await stores.once.claim("jwt", key, start + 500, start + 199.5) is False
            gone = secrets.token_hex(20)
            assert await stores.once.claim("jwt", gone, start, start) is True
            assert await stores.once.claim("jwt", gone, start + 10, start) is True
            assert await stores.once.claim("jwt", gone, start + 20, start + 9) is False

    run(body)


def test_release_makes_a_key_claimable_again(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True
        await stores.once.release("jwt", key)
        assert await stores.once.claim("jwt", key, NOW + 100, NOW + 1) is True
        await stores.once.release("jwt", "never-claimed")  # not an error

    run(body)


def test_of_twenty_racing_claims_exactly_one_wins(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        results = await asyncio.gather(*(stores.once.claim("jwt", key, NOW + 100, NOW) for _ in range(20)))
        assert sorted(results) == [False] * 19 + [True]

    run(body)


@callers_clock
def test_purge_expired_deletes_only_expired_claims(stores: Stores) -> None:
    async def body() -> None:
        old, fresh = secrets.token_hex(20), secrets.token_hex(20)
        assert await stores.once.claim("jwt", old, NOW + 10, NOW)
        assert await stores.once.claim("jwt", fresh, NOW + 1_000, NOW)

        assert await stores.once.purge_expired(NOW + 100) == 1

        assert await stores.once.claim("jwt", fresh, NOW + 2_000, NOW + 100) is False
        assert await stores.once.purge_expired(NOW + 100) == 0

    run(body)


@callers_clock
def test_a_put_value_is_read_back_until_it_expires(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        assert await stores.once.get("lti13_state", key, NOW) is None
        await stores.once.put("lti13_state", key, '{"nonce": "n"}', NOW + 10)
        assert await stores.once.get("lti13_state", key, NOW) == '{"nonce": "n"}'
        assert await stores.once.get("lti13_state", key, NOW + 9) == '{"nonce": "n"}'
        assert await stores.once.get("lti13_state", key, NOW + 10) is None
        assert await stores.once.get("exchange", key, NOW) is None  # namespaces are separate

    run(body)


def test_a_later_put_replaces_the_value_and_its_expiry(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        await stores.once.put("exchange", key, "first", NOW + 10)
        await stores.once.put("exchange", key, "second", NOW + 100)
        assert await stores.once.get("exchange", key, NOW + 50) == "second"

    run(body)


@callers_clock
def test_purge_expired_deletes_expired_values_too(stores: Stores) -> None:
    async def body() -> None:
        old, fresh = secrets.token_hex(20), secrets.token_hex(20)
        await stores.once.put("exchange", old, "old", NOW + 10)
        await stores.once.put("exchange", fresh, "fresh", NOW + 1_000)
        assert await stores.once.purge_expired(NOW + 100) == 1
        assert await stores.once.get("exchange", fresh, NOW + 100) == "fresh"

    run(body)


@redis_ttl
def test_ttl_claims_and_values_expire_by_themselves_so_purge_has_nothing_to_do(stores: Stores) -> None:
    """Twin of the ``purge_expired`` tests of claims and the expiry test of values, which Redis
    cannot meet as written: a value lives in a key whose TTL runs out at ``expires_at`` on Redis'
    own clock, and a claim's key is dropped by its TTL soon after its expiry (claims are judged
    by the caller's clock, as above), so ``purge_expired`` finds nothing and returns 0. The same
    promise with real time: an expired claim can be claimed again while a live one still
    stands, and an expired value reads as None."""

    async def body() -> None:
        now = time.time()
        short, long_lived = secrets.token_hex(20), secrets.token_hex(20)
        assert await stores.once.claim("jwt", short, now + 0.3, now) is True
        assert await stores.once.claim("jwt", long_lived, now + 1_000, now) is True
        assert await stores.once.claim("jwt", short, now + 0.3, now) is False
        await stores.once.put("lti13_state", short, "value", now + 0.3)
        assert await stores.once.get("lti13_state", short, now) == "value"
        assert await stores.once.get("exchange", short, now) is None  # namespaces are separate

        await asyncio.sleep(0.6)

        later = time.time()
        assert await stores.once.purge_expired(later) == 0
        assert await stores.once.get("lti13_state", short, later) is None
        assert await stores.once.claim("jwt", short, later + 100, later) is True
        assert await stores.once.claim("jwt", long_lived, later + 100, later) is False

    run(body)


@callers_clock
def test_purge_expired_deletes_claims_in_batches_of_at_most_limit(stores: Stores) -> None:
    async def body() -> None:
        for n in range(5):
            assert await stores.once.claim("jwt", f"old-{n}", NOW + n, NOW)
        assert await stores.once.claim("jwt", "fresh", NOW + 1_000, NOW)

        assert [await stores.once.purge_expired(NOW + 100, limit=2) for _ in range(4)] == [2, 2, 1, 0]

        assert await stores.once.claim("jwt", "fresh", NOW + 2_000, NOW + 100) is False
        assert await stores.once.claim("jwt", "old-0", NOW + 2_000, NOW + 100) is True

    run(body)


# -- Stores ---------------------------------------------------------------------------------


def test_closing_twice_is_safe(stores: Stores) -> None:
    run(stores.close)
    run(stores.close)


def test_ping_answers_on_an_open_store(stores: Stores) -> None:
    run(stores.ping)  # raises StoreUnavailable if a backing store cannot answer


# -- Stores.atomic --------------------------------------------------------------------------

#: The backend that commits a scope's writes together (the others keep each write on its own).
grouping = pytest.mark.parametrize("stores", ["sqlite"], indirect=True)


def test_writes_inside_atomic_are_all_kept_when_it_ends(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        session_id, record = _session(user_id="atomic")
        async with stores.atomic():
            assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True
            await stores.sessions.create(record)
            assert await stores.sessions.get(record.id_hash) == record  # read back inside, too
            await stores.records.add_audit_event(_event(user_id="atomic"))
        assert await stores.sessions.get(hash_id(session_id)) == record
        assert await stores.once.claim("jwt", key, NOW + 100, NOW) is False
        assert await stores.records.list_audit_events(user_id="atomic") == [_event(user_id="atomic")]

    run(body)


@grouping
def test_a_scope_that_raises_keeps_none_of_its_writes(stores: Stores) -> None:
    async def body() -> None:
        key = secrets.token_hex(20)
        _, record = _session(user_id="undone")
        with pytest.raises(CreateError):
            async with stores.atomic():
                assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True
                await stores.sessions.create(record)
                await stores.records.add_audit_event(_event(user_id="undone"))
                await stores.sessions.create(record)  # the same id again: CreateError
        assert await stores.sessions.get(record.id_hash) is None
        assert await stores.once.claim("jwt", key, NOW + 100, NOW) is True
        assert await stores.records.list_audit_events(user_id="undone") == []

    run(body)


def test_a_failed_statement_caught_inside_atomic_leaves_the_other_writes(stores: Stores) -> None:
    async def body() -> None:
        _, first = _session(user_id="kept")
        _, clash = _session(user_id="clash")
        async with stores.atomic():
            await stores.sessions.create(first)
            with pytest.raises(CreateError):
                await stores.sessions.create(SessionRecord(**{**_fields(clash), "id_hash": first.id_hash}))
            await stores.records.add_audit_event(_event(user_id="kept"))
        assert await stores.sessions.get(first.id_hash) == first
        assert len(await stores.records.list_audit_events(user_id="kept")) == 1

    run(body)
