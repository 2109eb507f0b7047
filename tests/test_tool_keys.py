"""The tool's own signing keys over real HTTP and the real CLI: made on first migrate,
published at /api/lti/jwks (public parts only), rotated by ``commons-session keys rotate`` with
the old key kept in the JWKS for the overlap, and never shown whole anywhere."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from .backends import postgres_database
from .canvas import CanvasUser
from .conftest import Server
from .platform13 import JwksServer, jwks_server, register
from .test_deep_linking import dl_session, respond, verified

PUBLIC = {"kty", "n", "e", "kid", "alg", "use"}


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env["COMMONS_SESSION_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "commons_session", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _listed(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _thumbprint(jwk: dict[str, str]) -> str:
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _kids(server: Server) -> list[str]:
    return [k["kid"] for k in httpx.get(server.url + "/api/lti/jwks").json()["keys"]]


def test_the_jwks_publishes_public_rs256_keys_only_with_a_short_cache(server: Server) -> None:
    response = httpx.get(server.url + "/api/lti/jwks")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "public, max-age=300"
    document = response.json()
    assert set(document) == {"keys"} and document["keys"]
    for key in document["keys"]:
        assert set(key) == PUBLIC
        assert (key["kty"], key["alg"], key["use"], key["e"]) == ("RSA", "RS256", "sig", "AQAB")
        assert key["kid"] == _thumbprint(key)  # the kid names the key itself (RFC 7638)
        assert len(base64.urlsafe_b64decode(key["n"] + "==")) == 256  # 2048 bits
        jwt.PyJWK(key)  # parses as a public key
    assert "PRIVATE" not in response.text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_makes_the_first_key_once_and_keys_list_never_shows_private_parts(
    tmp_path: Path, backend: str
) -> None:
    def check(url: str) -> None:
        assert _cli(url, "migrate").returncode == 0
        first = _listed(_cli(url, "keys", "list", "--json"))
        assert len(first) == 1 and first[0]["state"] == "signing"
        assert set(first[0]) == {"kid", "state", "created_at", "retired_at", "published_until"}
        assert _cli(url, "migrate").returncode == 0
        assert _listed(_cli(url, "keys", "list", "--json")) == first  # no second key
        plain = _cli(url, "keys", "list")
        assert plain.returncode == 0 and str(first[0]["kid"]) in plain.stdout
        for out in (plain.stdout, _cli(url, "keys", "list", "--json").stdout):
            assert "PRIVATE" not in out and '"d"' not in out

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'fresh.db'}")
    else:
        with postgres_database() as url:
            check(url)


def test_two_migrations_racing_on_a_fresh_database_leave_all_keys_published_and_the_newest_signing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONS_SESSION_")}
    env["COMMONS_SESSION_DATABASE_URL"] = url
    command = [sys.executable, "-m", "commons_session", "migrate"]
    racing = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(60) for p in racing] == [0, 0]
    listed = _listed(_cli(url, "keys", "list", "--json"))
    assert 1 <= len(listed) <= 2
    assert [k["state"] for k in listed] == ["signing", "active"][: len(listed)]


def test_a_response_signed_before_a_rotation_verifies_during_the_overlap_and_not_after(
    make_server: Callable[..., Server], jwks: JwksServer, user: CanvasUser
) -> None:
    server = make_server()
    platform = register(server, jwks)
    before = respond(server, dl_session(server, platform, user), [{"type": "ltiResourceLink"}]).json()["jwt"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    assert _kids(server) == [old_kid]

    rotated = server.cli("keys", "rotate", "--overlap", "3", "--json")
    assert rotated.returncode == 0, rotated.stderr
    answer = json.loads(rotated.stdout)
    new_kid = answer["signing"]
    assert answer["retired"] == [old_kid] and new_kid != old_kid
    assert _kids(server) == [new_kid, old_kid]
    verified(server, before, platform)  # still verifies: the old key is published

    after = respond(server, dl_session(server, platform, user), [{"type": "ltiResourceLink"}]).json()["jwt"]
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    verified(server, after, platform)
    states = {k["kid"]: k["state"] for k in _listed(server.cli("keys", "list", "--json"))}
    assert states == {new_kid: "signing", old_kid: "published"}

    time.sleep(3.2)
    assert _kids(server) == [new_kid]
    with pytest.raises(jwt.PyJWKClientError):
        verified(server, before, platform)
    verified(server, after, platform)
    assert {k["kid"]: k["state"] for k in _listed(server.cli("keys", "list", "--json"))}[old_kid] == "expired"
    assert "PRIVATE" not in server.logs()


@pytest.mark.parametrize("overlap", ["nan", "-1", "inf", "1e12", "a day"])
def test_rotate_refuses_a_bad_overlap_and_changes_nothing(server: Server, overlap: str) -> None:
    before = _kids(server)
    result = server.cli("keys", "rotate", "--overlap", overlap)
    assert result.returncode == 2 and "overlap" in result.stderr
    assert _kids(server) == before


def test_rotate_with_no_overlap_drops_the_old_key_at_once(make_server: Callable[..., Server]) -> None:
    server = make_server()
    old = _kids(server)
    result = server.cli("keys", "rotate", "--overlap", "0")
    assert result.returncode == 0, result.stderr
    assert len(_kids(server)) == 1 and _kids(server) != old
    assert "signing" in result.stdout and "PRIVATE" not in result.stdout
