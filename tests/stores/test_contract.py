"""One contract suite for the three store roles in ``stores/base.py``, written against the
contract only, so every backend answers to the same sentences.

Each test is a plain function that runs an async body with ``asyncio.run``; the ``stores``
fixture opens a fresh backend per test. Adding a backend is one more ``params`` entry and one
more branch in ``_open``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from commons_session.domain.ids import hash_id, new_session_id
from commons_session.domain.models import AccountSettings, Identity, Institution, Profile, SessionRecord
from commons_session.errors import CreateError, DuplicateInstitution, InstitutionNotFound
from commons_session.stores.base import Stores

T = TypeVar("T")

GUID = "7db438071375c02373713c12c73869ff2f470b68:canvas-lms"
NOW = 1_800_000_000.0


def _open(backend: str, tmp_path: Path) -> Stores:
    if backend == "sqlite":
        from commons_session.stores.sqlite import SqliteStores

        return SqliteStores(tmp_path / "contract.db")
    raise AssertionError(f"no such backend {backend!r}")


@pytest.fixture(params=["sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """An empty store of the test's own: tests count rows and reuse keys, so a backend's branch
    in ``_open`` must hand each test a fresh database (or key prefix)."""
    opened = _open(request.param, tmp_path)
    yield opened
    asyncio.run(opened.close())


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


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


def test_purge_expired_deletes_only_expired_claims(stores: Stores) -> None:
    async def body() -> None:
        old, fresh = secrets.token_hex(20), secrets.token_hex(20)
        assert await stores.once.claim("jwt", old, NOW + 10, NOW)
        assert await stores.once.claim("jwt", fresh, NOW + 1_000, NOW)

        assert await stores.once.purge_expired(NOW + 100) == 1

        assert await stores.once.claim("jwt", fresh, NOW + 2_000, NOW + 100) is False
        assert await stores.once.purge_expired(NOW + 100) == 0

    run(body)


# -- Stores ---------------------------------------------------------------------------------


def test_closing_twice_is_safe(stores: Stores) -> None:
    run(stores.close)
    run(stores.close)
