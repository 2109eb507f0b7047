"""The store contract for the tool's own signing keys (``RecordStore.*_tool_key*``), on SQLite
and PostgreSQL: the records always live in the SQL database, also when Redis holds sessions."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from commons_session.domain.models import ToolKey
from commons_session.errors import CreateError
from commons_session.lti import keys
from commons_session.stores.base import Stores

from . import test_contract as contract
from .test_contract import NOW, SQL, run

# The contract suite's fixtures, by the names its ``stores`` fixture asks for.
stores = contract.stores
postgres_backend = contract.postgres_backend
redis_backend = contract.redis_backend
redis_cluster_backend = contract.redis_cluster_backend

sql_only = pytest.mark.parametrize("stores", SQL, indirect=True)

# RSA generation is slow-ish; the store does not care what the PEM holds, only that it keeps it.
_MADE = keys.new_key(NOW)


def _key(kid: str, created_at: float) -> ToolKey:
    jwk = {**_MADE.public_jwk, "kid": kid}
    return dataclasses.replace(_MADE, kid=kid, public_jwk=jwk, created_at=created_at)


@sql_only
def test_added_keys_are_listed_newest_first_with_every_field_kept(stores: Stores) -> None:
    async def body() -> None:
        assert await stores.records.list_tool_keys() == []
        await stores.records.add_tool_key(_key("old", NOW))
        await stores.records.add_tool_key(_key("new", NOW + 5))
        listed = await stores.records.list_tool_keys()
        assert [k.kid for k in listed] == ["new", "old"]
        assert listed[1] == _key("old", NOW)
        assert listed[1].private_pem == _MADE.private_pem
        assert listed[1].public_jwk["n"] == _MADE.public_jwk["n"]

    run(body)


@sql_only
def test_a_duplicate_kid_raises_create_error_and_keeps_the_first(stores: Stores) -> None:
    async def body() -> None:
        await stores.records.add_tool_key(_key("k", NOW))
        with pytest.raises(CreateError):
            await stores.records.add_tool_key(_key("k", NOW + 1))
        assert [(k.kid, k.created_at) for k in await stores.records.list_tool_keys()] == [("k", NOW)]

    run(body)


@sql_only
def test_rotate_retires_every_active_key_and_leaves_earlier_retirements_alone(stores: Stores) -> None:
    async def body() -> None:
        await stores.records.add_tool_key(_key("a", NOW))
        await stores.records.rotate_tool_keys(_key("b", NOW + 10), NOW + 100)
        await stores.records.add_tool_key(_key("c", NOW + 20))  # a second worker's key
        retired = await stores.records.rotate_tool_keys(_key("d", NOW + 30), NOW + 1_000)
        assert sorted(k.kid for k in retired) == ["b", "c"]
        by_kid = {k.kid: k for k in await stores.records.list_tool_keys()}
        assert (by_kid["a"].retired_at, by_kid["a"].published_until) == (NOW + 10, NOW + 100)
        assert (by_kid["b"].retired_at, by_kid["b"].published_until) == (NOW + 30, NOW + 1_000)
        assert (by_kid["c"].retired_at, by_kid["c"].published_until) == (NOW + 30, NOW + 1_000)
        assert by_kid["d"].retired_at is None and by_kid["d"].published_until is None
        assert keys.signing_key(list(by_kid.values())) == by_kid["d"]

    run(body)


@sql_only
def test_a_rotation_whose_kid_is_taken_changes_nothing(stores: Stores) -> None:
    async def body() -> None:
        await stores.records.add_tool_key(_key("a", NOW))
        with pytest.raises(CreateError):
            await stores.records.rotate_tool_keys(_key("a", NOW + 10), NOW + 100)
        (only,) = await stores.records.list_tool_keys()
        assert only.retired_at is None and only.created_at == NOW

    run(body)


@sql_only
def test_delete_removes_only_retired_keys_whose_overlap_ended(stores: Stores) -> None:
    async def body() -> None:
        await stores.records.add_tool_key(_key("a", NOW))
        await stores.records.rotate_tool_keys(_key("b", NOW + 10), NOW + 100)
        assert await stores.records.delete_tool_keys(NOW + 99) == 0
        assert await stores.records.delete_tool_keys(NOW + 100) == 1
        assert [k.kid for k in await stores.records.list_tool_keys()] == ["b"]
        assert await stores.records.delete_tool_keys(NOW + 10**9) == 0  # the signing key stays

    run(body)


@sql_only
def test_ensure_makes_one_key_keeps_it_and_follows_a_rotation(stores: Stores) -> None:
    async def body() -> None:
        tool = keys.ToolKeys(stores.records)
        first = await tool.ensure(NOW)
        assert await tool.ensure(NOW + 1) == first
        assert [k.kid for k in await stores.records.list_tool_keys()] == [first.kid]
        made, retired = await tool.rotate(NOW + 2, overlap=60)
        assert [k.kid for k in retired] == [first.kid]
        assert await tool.ensure(NOW + 3) == made
        published = [k["kid"] for k in (await tool.jwks(NOW + 61))["keys"]]
        assert published == [made.kid, first.kid]
        assert [k["kid"] for k in (await tool.jwks(NOW + 62))["keys"]] == [made.kid]
        await tool.rotate(NOW + 63, overlap=60)  # deletes the keys whose overlap ended
        assert first.kid not in {k.kid for k in await stores.records.list_tool_keys()}

    run(body)


@sql_only
def test_two_ensures_at_once_on_an_empty_store_leave_one_signing_key_and_publish_all(stores: Stores) -> None:
    async def body() -> None:
        made = await asyncio.gather(
            keys.ToolKeys(stores.records).ensure(NOW), keys.ToolKeys(stores.records).ensure(NOW)
        )
        listed = await stores.records.list_tool_keys()
        assert 1 <= len(listed) <= 2
        assert keys.signing_key(listed) == listed[0]
        assert all(m.kid in {k.kid for k in listed} for m in made)
        published = keys.jwks_document(listed, NOW)["keys"]
        assert [k["kid"] for k in published] == [k.kid for k in listed]

    run(body)


def test_a_tool_keys_repr_never_shows_the_private_key() -> None:
    assert "PRIVATE" not in repr(_MADE) and _MADE.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert set(keys.jwks_document([_MADE], NOW)["keys"][0]) == {"kty", "n", "e", "kid", "alg", "use"}
