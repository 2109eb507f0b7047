"""Signed LTI 1.1 parameters wherever they sit (issue 11, item 2).

OAuth 1.0a signs the query, the body and an ``Authorization: OAuth`` header together, so a
signed parameter may be moved from the body into the URL without breaking the signature. What
the launch records must be exactly what the signature covered, wherever each parameter sits; a
name given twice is refused. Every case is a real launch over HTTP, signed by oauthlib's client.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_AUTH_HEADER, SIGNATURE_TYPE_BODY, Client

from commons_session.domain.models import Institution
from commons_session.errors import RepeatedLaunchParameter
from commons_session.lti import v11 as lti

from .backends import postgres_database, redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, launch, onboard, session_cookie, start_server
from .test_properties import FAST, HTTP

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ADMIN_ROLES = "Instructor,urn:lti:instrole:ims/lis/Administrator"


def post_split(
    server: Server,
    canvas: FakeCanvas,
    user: CanvasUser,
    to_query: set[str],
    *,
    rng: random.Random | None = None,
    oauth_in_query: bool = False,
    **overrides: Any,
) -> httpx.Response:
    """A launch signed as Canvas signs it (everything in the body), then with the parameters
    named in ``to_query`` moved into the URL (the signature still verifies: the base string is
    the same), each part in the order ``rng`` shuffles it to."""
    body, _ = canvas.signed_launch(server.url + "/api/lti", user, **overrides)
    pairs = parse_qsl(body, keep_blank_values=True)
    moved = [(k, v) for k, v in pairs if k in to_query or (oauth_in_query and k.startswith("oauth_"))]
    kept = [pair for pair in pairs if pair not in moved]
    if rng is not None:
        rng.shuffle(moved)
        rng.shuffle(kept)
    url = server.url + "/api/lti" + (f"?{urlencode(moved)}" if moved else "")
    return httpx.post(url, content=urlencode(kept), headers=FORM)


def sign_pairs(
    canvas: FakeCanvas,
    url: str,
    body: list[tuple[str, str]],
    *,
    signature_type: str = SIGNATURE_TYPE_BODY,
) -> tuple[str, dict[str, str]]:
    """Sign exactly these body pairs (repeats included) and the query of ``url``, as a consumer
    that holds the secret would: what any verifier computes, the signature covers."""
    client = Client(
        canvas.consumer_key,
        client_secret=canvas.secret,
        signature_method=SIGNATURE_HMAC_SHA1,
        signature_type=signature_type,
        nonce=secrets.token_hex(20),
    )
    _, headers, signed = client.sign(url, http_method="POST", body=urlencode(body), headers=FORM)
    return signed, headers


def launch_pairs(canvas: FakeCanvas, user: CanvasUser) -> list[tuple[str, str]]:
    """The launch's parameters as pairs, ``oauth_callback`` last."""
    params = canvas.launch_params(user)
    return [(k, v) for k, v in params.items() if v is not None] + [("oauth_callback", "about:blank")]


def contents(server: Server, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 303, response.text
    sid = session_cookie(response)
    read = httpx.get(f"{server.url}/api/sessions/{sid}", headers={"x-session-id": sid})
    assert read.status_code == 200, read.text
    return {k: v for k, v in read.json().items() if k not in ("sid", "expires")}


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text
    assert not any(h.startswith("session=") for h in response.headers.get_list("set-cookie"))


# -- the exploits -----------------------------------------------------------------------------


def test_a_disabled_user_cannot_re_enter_by_moving_the_instance_guid_into_the_query(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """Body-only reading saw no ``tool_consumer_instance_guid``, so the launch named another
    identity (empty guid), which was not disabled: a fresh user and a session."""
    sid = onboard(server, canvas, user)
    user_id = httpx.get(f"{server.url}/api/sessions/{sid}", headers={"x-session-id": sid}).json()["userId"]
    assert server.cli("users", "disable", "--user", user_id).returncode == 0
    assert_problem(launch(server, canvas, user), 403, "user_disabled")
    for moved in ({"tool_consumer_instance_guid"}, {"tool_consumer_instance_guid", "user_id"}):
        assert_problem(post_split(server, canvas, user, moved), 403, "user_disabled")
        assert_problem(post_split(server, canvas, user, moved, oauth_in_query=True), 403, "user_disabled")


def test_roles_and_profile_moved_into_the_query_are_still_what_the_launch_records(
    server: Server, canvas: FakeCanvas
) -> None:
    """Body-only reading stripped the roles (and with them ``isAdmin``) of a signed launch whose
    ``roles`` and ``ext_roles`` sat in the URL."""
    admin = CanvasUser(roles=ADMIN_ROLES)
    baseline = contents(server, launch(server, canvas, admin))
    assert baseline["isAdmin"] is True and baseline["roles"] == ADMIN_ROLES.split(",")
    moved = {"roles", "ext_roles", "lis_person_name_full", "custom_canvas_user_id"}
    assert contents(server, post_split(server, canvas, admin, moved)) == baseline


def test_user_id_in_the_query_names_the_same_person_as_in_the_body(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    baseline = contents(server, launch(server, canvas, user))
    assert contents(server, post_split(server, canvas, user, {"user_id"})) == baseline


# -- repeated names ---------------------------------------------------------------------------


def test_a_name_given_twice_is_400_wherever_each_copy_sits_even_with_one_value(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """Each launch here is correctly signed over both copies; body-only reading took the first
    body copy (or the body's over the query's) and let the other one pass unexamined."""
    other = secrets.token_hex(20)
    base = [p for p in launch_pairs(canvas, user) if p[0] != "user_id"]
    cases = {
        "body twice, different": ("", [("user_id", user.lti_user_id), ("user_id", other), *base]),
        "body twice, same": ("", [("user_id", user.lti_user_id), ("user_id", user.lti_user_id), *base]),
        "query twice, different": (urlencode([("user_id", other), ("user_id", user.lti_user_id)]), base),
        "body and query, different": (
            urlencode([("user_id", other)]),
            [("user_id", user.lti_user_id), *base],
        ),
        "body and query, same": (
            urlencode([("user_id", user.lti_user_id)]),
            [("user_id", user.lti_user_id), *base],
        ),
        "roles in body and query": (
            urlencode([("roles", "Learner")]),
            [("user_id", user.lti_user_id), *base],
        ),
    }
    for name, (query, body) in cases.items():
        url = server.url + "/api/lti" + (f"?{query}" if query else "")
        signed, headers = sign_pairs(canvas, url, body)
        refused = httpx.post(url, content=signed, headers=headers)
        assert refused.status_code == 400, name
        assert_problem(refused, 400, "repeated_launch_parameter")
    # Nobody was recorded by any of them: a clean launch is this person's first.
    first = launch(server, canvas, user)
    assert first.status_code == 303 and first.headers["location"].startswith("/terms")


# -- the Authorization header -----------------------------------------------------------------


def test_oauth_parameters_in_the_authorization_header_are_signed_and_read_like_the_body(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    baseline = contents(server, launch(server, canvas, user))
    url = server.url + "/api/lti"
    signed, headers = sign_pairs(
        canvas, url, launch_pairs(canvas, user)[:-1], signature_type=SIGNATURE_TYPE_AUTH_HEADER
    )
    assert headers["Authorization"].startswith("OAuth ")
    assert contents(server, httpx.post(url, content=signed, headers=headers)) == baseline
    # The header's oauth_* and the body's together are refused, never merged.
    body, _ = canvas.signed_launch(url, user)
    mixed = httpx.post(url, content=body, headers={**FORM, "Authorization": headers["Authorization"]})
    assert_problem(mixed, 401, "invalid_oauth_request")
    # A non-OAuth Authorization header (a proxy's Basic) is not part of the launch.
    basic = httpx.post(
        url, content=canvas.signed_launch(url, user)[0], headers={**FORM, "Authorization": "Basic eDp5"}
    )
    assert contents(server, basic) == baseline


# -- the property ---------------------------------------------------------------------------

_MOVABLE = sorted(
    set(FakeCanvas("k", "s").launch_params(CanvasUser()))
    - {"lis_person_contact_email_primary", "lis_person_name_family"}
)


@pytest.fixture(scope="module")
def shared_canvas(server: Server) -> FakeCanvas:
    """One institution for every Hypothesis example (function fixtures are not reset between them)."""
    return server.add_institution()


@HTTP
@given(
    to_query=st.sets(st.sampled_from(_MOVABLE)),
    oauth_in_query=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_placement_of_signed_parameters_changes_the_identity_or_profile_recorded(
    server: Server, shared_canvas: FakeCanvas, to_query: set[str], oauth_in_query: bool, seed: int
) -> None:
    """Any split of a signed launch between query and body, in any order, records exactly what
    the all-in-body launch records (same user, same session contents), or nothing."""
    canvas = shared_canvas
    person = CanvasUser(lti_user_id="placement-" + canvas.consumer_key, roles=ADMIN_ROLES)
    baseline = contents(server, launch(server, canvas, person))
    response = post_split(
        server, canvas, person, to_query, rng=random.Random(seed), oauth_in_query=oauth_in_query
    )
    assert contents(server, response) == baseline


# -- the same property on the verifier alone, many more examples ------------------------------

_URL = "https://commons.example.edu/api/lti"
_CANVAS = FakeCanvas("placement-key", "placement-secret")
_INSTITUTION = Institution(id=1, consumer_key=_CANVAS.consumer_key, name="U", secrets=(_CANVAS.secret,))


def _verify(url: str, body: str, authorization: str | None = None) -> dict[str, str]:
    return lti.verify_launch(
        uri=url,
        body=body,
        content_type=FORM["Content-Type"],
        pairs=lti.signed_pairs(url, body, authorization),
        institution=_INSTITUTION,
        now=time.time(),
        timestamp_window=5_400,
        authorization=authorization,
    )


@FAST
@given(
    moved=st.lists(st.booleans(), min_size=40, max_size=40),
    oauth_in_query=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    repeat=st.one_of(st.none(), st.tuples(st.integers(0, 40), st.booleans(), st.booleans())),
)
def test_any_split_verifies_to_the_signed_parameters_and_any_repeat_is_refused(
    moved: list[bool],
    oauth_in_query: bool,
    seed: int,
    repeat: tuple[int, bool, bool] | None,
) -> None:
    """Split a signed launch between query and body in any order: it verifies to exactly the
    parameters that were signed. Sign it with one name twice (same or another value, the copy
    in the query or the body): it is refused as repeated, never read as one of the two."""
    pairs = [p for p in launch_pairs(_CANVAS, CanvasUser(lti_user_id="u1")) if p[0] != "oauth_callback"]
    copy_in_query = False
    if repeat is not None:
        index, same, copy_in_query = repeat
        name, value = pairs[index % len(pairs)]
        pairs.append((name, value if same else value + "x"))
    body, _ = sign_pairs(_CANVAS, _URL, pairs)
    signed = parse_qsl(body, keep_blank_values=True)
    expected = dict(signed)
    copy = max(i for i, (k, _) in enumerate(signed) if k == pairs[-1][0]) if repeat is not None else -1
    query: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    for i, pair in enumerate(signed):
        oauth = pair[0].startswith("oauth_")
        to_query = oauth_in_query if oauth else moved[i % len(moved)]
        if i == copy:
            to_query = copy_in_query  # the second copy, where the example puts it
        (query if to_query else kept).append(pair)
    rng = random.Random(seed)
    rng.shuffle(query)
    rng.shuffle(kept)
    url = _URL + (f"?{urlencode(query)}" if query else "")
    if repeat is not None:
        with pytest.raises(RepeatedLaunchParameter):
            _verify(url, urlencode(kept))
        return
    assert _verify(url, urlencode(kept)) == expected


def test_a_nonce_re_encoded_in_the_body_is_still_the_nonce_that_was_signed(
    server: Server, canvas: FakeCanvas, user: CanvasUser
) -> None:
    """oauthlib unescapes ``oauth_*`` values once more than a form parser does, and verifies
    with that value. Read from the form, ``%2561bc`` and ``abc`` were two nonces for one
    signed launch, so a used launch was accepted again, re-encoded."""
    nonce = "abc" + secrets.token_hex(18)
    body, headers = canvas.signed_launch(server.url + "/api/lti", user, nonce=nonce)
    assert httpx.post(server.url + "/api/lti", content=body, headers=headers).status_code == 303
    re_encoded = body.replace(f"oauth_nonce={nonce}", f"oauth_nonce=%2561{nonce[1:]}")
    assert re_encoded != body
    replayed = httpx.post(server.url + "/api/lti", content=re_encoded, headers=headers)
    assert_problem(replayed, 401, "replayed_nonce")


# -- the same on every store ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "postgresql+redis"])
def test_placement_every_cookie_and_the_spent_code_hold_on_postgresql_and_redis(
    tmp_path: Path, backend: str
) -> None:
    """The store-facing parts of this class (the disabled user's lookup, ending each presented
    session, spending the hand-off code) on the other stores; SQLite runs every test above."""
    with contextlib.ExitStack() as stack:
        settings: dict[str, Any] = {"database_url": stack.enter_context(postgres_database())}
        if backend.endswith("redis"):
            settings["redis_url"] = stack.enter_context(redis_server()).url
        server = start_server(tmp_path, **settings)
        stack.callback(server.stop)
        canvas, user = server.add_institution(), CanvasUser()
        first = session_cookie(launch(server, canvas, user))
        second = session_cookie(launch(server, canvas, user))
        body, headers = canvas.signed_launch(server.url + "/api/lti", user)
        cookie = ("cookie", f"session={first}; session={second}")
        launched = httpx.post(server.url + "/api/lti", content=body, headers=[*headers.items(), cookie])
        for held in (first, second):
            read = httpx.get(f"{server.url}/api/sessions/{held}", headers={"x-session-id": held})
            assert read.status_code == 401, backend
        held = session_cookie(launched)
        page = httpx.get(server.url + launched.headers["location"], headers={"cookie": f"session={held}"})
        assert page.status_code == 200
        code = launched.headers["location"].split("code=", 1)[1]
        traded = httpx.post(server.url + "/api/sessions/exchange", json={"code": code})
        assert_problem(traded, 401, "invalid_exchange_code")
        user_id = httpx.get(f"{server.url}/api/sessions/{held}", headers={"x-session-id": held}).json()[
            "userId"
        ]
        assert server.cli("users", "disable", "--user", user_id).returncode == 0
        moved = post_split(server, canvas, user, {"tool_consumer_instance_guid"})
        assert_problem(moved, 403, "user_disabled")
