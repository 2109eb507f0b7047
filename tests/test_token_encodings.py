"""One token, one spelling: no re-encoding of a used token authenticates, and no claim value
(NaN, Infinity, a number no double holds, a lone surrogate) gets past the JSON reader.

A used Canvas JWT with ``=`` appended to its signature made a second session on every store: the
single-use marker was keyed on the presented string while the decoder accepted several spellings
of the same token. Here the alternatives are drawn by Hypothesis (padding in any segment,
whitespace, the standard alphabet's ``+`` and ``/``, bits set past the last byte, header or
payload JSON written another way) and sent over HTTP to a real server on SQLite, on PostgreSQL,
and on PostgreSQL with Redis for sessions and single-use markers; the LTI 1.3 id_token likewise.
The domain-level properties check ``domain.jws`` and ``domain.strict_json`` against independent
oracles, and the time claims of both tokens against the one rule (a whole number of seconds).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import string
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from commons_session.domain import jws, tokens
from commons_session.domain.models import Identity, Institution, Lti13Registration, Profile
from commons_session.domain.service import Policy, SessionService
from commons_session.domain.strict_json import MAX_NUMERIC_DATE, json_object
from commons_session.domain.terms import Terms
from commons_session.errors import (
    IdTokenExpired,
    IdTokenFromFuture,
    InvalidClaims,
    InvalidIdTokenSignature,
    InvalidSignature,
    MalformedIdToken,
    MalformedToken,
    TokenExpired,
    TokenReplayed,
)
from commons_session.lti import v13 as lti13
from commons_session.stores.factory import make_stores

from .backends import postgres_database, redis_server
from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, onboard, start_server
from .platform13 import CLAIM, JwksServer, Platform, jwks_server, login, post_launch

FAST = settings(max_examples=150, deadline=None, database=None, print_blob=True)
HTTP = settings(
    max_examples=30,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: base64url's alphabet, in the order of the values the characters stand for.
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
STORES = ["sqlite", "postgres", "redis"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _canonical(segment: str) -> bool:
    """The oracle: base64url characters only, and the one spelling of the bytes they decode to."""
    if set(segment) - set(B64URL):
        return False
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return b64url(raw) == segment


def hs256(header: bytes, payload: bytes, secret: str) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def rs256(header: bytes, payload: bytes, key: rsa.RSAPrivateKey) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url(signature)}"


# -- respelling a token -------------------------------------------------------------------------

_STANDARD = str.maketrans("-_", "+/")


def _json_again(segment: str, draw: st.DrawFn) -> str:
    """The same JSON object written another way (spacing, key order), canonically encoded."""
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    style = draw(st.sampled_from(["spaced", "indented", "sorted", "reversed"]))
    if style == "spaced":
        text = json.dumps(value, separators=(" , ", " : "))
    elif style == "indented":
        text = json.dumps(value, indent=1)
    elif style == "sorted":
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    else:
        text = json.dumps(dict(reversed(list(value.items()))))
    return b64url(text.encode())


@st.composite
def respellings(draw: st.DrawFn, token: str) -> tuple[str, str]:
    """Another spelling of ``token`` and what it is: "malformed" (not canonical base64url),
    "resigned" (JSON written again: the signing input changed, so the signature no longer
    fits) or "same" (whitespace around the token, which the route trims)."""
    segments = token.split(".")
    kind = draw(st.sampled_from(["pad", "pad all", "whitespace", "standard", "bits", "json", "edges"]))
    i = draw(st.integers(0, 2))
    if kind == "standard" and not any(set(s) & set("-_") for s in segments):
        kind = "pad"
    if kind == "bits" and not any(len(s) % 4 for s in segments):
        kind = "pad"
    if kind == "pad":
        segments[i] += draw(st.sampled_from(["=", "==", "===", "===="]))
    elif kind == "pad all":  # standard base64's spelling: padded, and "+" "/" for "-" "_"
        segments = [s.translate(_STANDARD) + "=" * (-len(s) % 4) for s in segments]
        if segments == token.split("."):
            segments[2] += "="
    elif kind == "whitespace":  # inside the token: at its very edges the route trims it ("edges")
        at = draw(st.integers(1 if i == 0 else 0, len(segments[i]) - (1 if i == 2 else 0)))
        space = draw(st.sampled_from([" ", "\t", "\n", "\r\n", "\x0b", "\x0c"]))
        segments[i] = segments[i][:at] + space + segments[i][at:]
    elif kind == "standard":
        i = draw(st.sampled_from([n for n, s in enumerate(segments) if set(s) & set("-_")]))
        segments[i] = segments[i].translate(_STANDARD)
    elif kind == "bits":
        i = draw(st.sampled_from([n for n, s in enumerate(segments) if len(s) % 4]))
        spare = 0xF if len(segments[i]) % 4 == 2 else 0x3
        last = B64URL.index(segments[i][-1])
        segments[i] = segments[i][:-1] + B64URL[last | draw(st.integers(1, spare))]
    elif kind == "json":
        i = draw(st.integers(0, 1))
        again = _json_again(segments[i], draw)
        if again == segments[i]:
            again = b64url(base64.urlsafe_b64decode(segments[i] + "==") + b" ")
        segments[i] = again
    respelled = ".".join(segments)
    if kind == "edges":
        respelled = (
            draw(st.sampled_from([" ", "\n", "\t", " \r\n"])) + token + draw(st.sampled_from(["", " ", "\n"]))
        )
        return respelled, "same"
    assert respelled != token
    return respelled, "resigned" if kind == "json" else "malformed"


# -- domain: base64url and JSON -----------------------------------------------------------------


@FAST
@given(
    st.one_of(
        st.text(alphabet=B64URL + "=+/ \t\n\r%.", max_size=12),
        st.binary(max_size=9).map(b64url),
        st.binary(max_size=9).map(lambda b: base64.b64encode(b).decode()),
    )
)
def test_a_segment_decodes_only_if_it_is_the_one_spelling_of_its_bytes(segment: str) -> None:
    decoded = jws.b64url_decode(segment.encode())
    if _canonical(segment):
        assert decoded == base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    else:
        assert decoded is None


@FAST
@given(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64))
def test_the_replay_key_of_a_canonical_token_is_the_hash_of_the_token(
    header: bytes, payload: bytes, signature: bytes
) -> None:
    # Markers written before the key was derived from the decoded parts stay valid.
    token = ".".join(b64url(part) for part in (header or b"{}", payload or b"{}", signature))
    compact = jws.split(token, "The JWT", MalformedToken)
    assert (compact.header, compact.payload, compact.signature) == (
        header or b"{}",
        payload or b"{}",
        signature,
    )
    assert compact.replay_key == hashlib.sha256(token.encode()).hexdigest()


_HOSTILE_JSON = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0" * 400,
    "-" + "9" * 320,
    '"\\ud800"',
    '"a\\udc00b"',
    '["\\udbff"]',
    '{"\\ud800": 1}',
]
_FINE_JSON = [
    '"\\ud83d\\ude00"',
    "1e308",
    "-0",
    "1" + "0" * 300,
    '"\\\\ud800"',
    "1e-400",
    "[1.5, true, null]",
]


@FAST
@given(
    st.dictionaries(st.text(max_size=5), st.sampled_from(_HOSTILE_JSON + _FINE_JSON), max_size=4),
    st.sampled_from([b"", b"\xef\xbb\xbf"]),
    st.sampled_from(["utf-8", "utf-16", "utf-32"]),
)
def test_strict_json_reads_exactly_the_utf8_i_json_objects(
    members: dict[str, str], bom: bytes, encoding: str
) -> None:
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members.items()) + "}"
    raw = bom + text.encode(encoding)

    def i_json() -> bool:  # the oracle: RFC 8259 UTF-8 without a BOM, and RFC 7493
        if bom or encoding != "utf-8":
            return False
        try:
            value = json.loads(text, parse_constant=lambda c: 1 / 0)
        except (ZeroDivisionError, ValueError):
            return False  # NaN, Infinity, -Infinity, or not JSON at all ("-NaN")
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            return False  # 1e400 read as inf, or a lone surrogate
        numbers = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        return all(abs(v) <= sys.float_info.max for v in numbers)

    try:
        value = json_object(raw, "The payload", MalformedToken)
    except MalformedToken:
        assert not i_json()
    else:
        assert i_json()
        assert value == json.loads(text)


# -- domain: the Canvas JWT ----------------------------------------------------------------------

NOW = 1_750_000_000
SECRET = "the-institutions-shared-secret"
INSTITUTION = Institution(7, "key-encodings", "Encoding U", (SECRET,))
HEADER = b'{"typ":"JWT","alg":"HS256"}'


def _payload(**claims: Any) -> dict[str, Any]:
    return {"consumer_key": INSTITUTION.consumer_key, "iat": NOW, "user_id": "u1", **claims}


def _raw(payload: dict[str, Any], raw: dict[str, str]) -> bytes:
    """``payload`` as JSON with each of ``raw``'s claims written as the given JSON text."""
    text = json.dumps({**payload, **{name: f"@@{name}@@" for name in raw}})
    for name, literal in raw.items():
        text = text.replace(json.dumps(f"@@{name}@@"), literal)
    return text.encode()


def _verify(token: str, *, max_age: int = 300, skew: int = 60) -> dict[str, Any]:
    return tokens.verify_token(
        token, INSTITUTION, now=NOW, max_age=max_age, future_skew=skew, max_bytes=16_384
    )


@FAST
@given(st.data())
def test_no_respelling_of_a_canonical_canvas_jwt_verifies(data: st.DataObject) -> None:
    token = hs256(HEADER, json.dumps(_payload(custom_n=data.draw(st.text(max_size=8)))).encode(), SECRET)
    assert _verify(token)["user_id"] == "u1"
    respelled, kind = data.draw(respellings(token))
    if kind == "same":
        assert (
            tokens.token_digest(tokens.parse(respelled.strip(), 16_384))
            == hashlib.sha256(token.encode()).hexdigest()
        )
        return
    with pytest.raises(MalformedToken if kind == "malformed" else InvalidSignature):
        _verify(respelled)
    if kind == "malformed":  # refused before any lookup: not even the consumer key is read
        with pytest.raises(MalformedToken):
            tokens.parse(respelled, 16_384)


_NOT_TIMES = [True, False, 1.0 * NOW, NOW + 0.5, "1750000000", None, [NOW], -1, MAX_NUMERIC_DATE + 1, 10**30]
_NOT_TIMES_RAW = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "1750000000.0", "17500000e2"]


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
@pytest.mark.parametrize("value", _NOT_TIMES + _NOT_TIMES_RAW, ids=repr)
def test_a_canvas_time_claim_must_be_a_whole_number_of_seconds(claim: str, value: Any) -> None:
    if isinstance(value, str) and value != "1750000000":
        payload = _raw(_payload(), {claim: value})
    else:
        payload = json.dumps(_payload(**{claim: value})).encode()
    token = hs256(HEADER, payload, SECRET)
    with pytest.raises((InvalidClaims, MalformedToken)):
        _verify(token, max_age=0, skew=10**12)  # no limit but the rule itself


def test_a_canvas_time_claim_at_either_end_of_the_range_is_a_time() -> None:
    for value in (0, MAX_NUMERIC_DATE):
        token = hs256(HEADER, json.dumps(_payload(iat=NOW, exp=MAX_NUMERIC_DATE, nbf=value)).encode(), SECRET)
        assert _verify(token, skew=MAX_NUMERIC_DATE)["nbf"] == value


# -- domain: the id_token ------------------------------------------------------------------------

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_REGISTRATION = Lti13Registration(
    id=1,
    institution_id=INSTITUTION.id,
    consumer_key=INSTITUTION.consumer_key,
    issuer="https://canvas.example.edu",
    client_id="10000000000001",
    deployment_ids=("1:abc",),
    jwks_url="https://canvas.example.edu/jwks",
    auth_url="https://sso.example.edu/auth",
)
_TARGET = "https://tool.example.edu/api/lti/launch"
_JWKS = {"keys": [{**RSAAlgorithm.to_jwk(_RSA.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}]}


async def _fetch(url: str, conditions: Mapping[str, str]) -> lti13.JwksResponse:
    return lti13.JwksResponse(_JWKS)


def _id_claims(**claims: Any) -> dict[str, Any]:
    return {
        "iss": _REGISTRATION.issuer,
        "aud": _REGISTRATION.client_id,
        "sub": "s1",
        "iat": NOW,
        "exp": NOW + 3600,
        "nonce": "n1",
        CLAIM + "deployment_id": "1:abc",
        CLAIM + "message_type": "LtiResourceLinkRequest",
        CLAIM + "version": "1.3.0",
        CLAIM + "target_link_uri": _TARGET,
        CLAIM + "roles": [],
        CLAIM + "resource_link": {"id": "rl1"},
        **claims,
    }


def _verify_id_token(token: str, *, leeway: float = 60) -> dict[str, Any]:
    keys = lti13.KeySets(_fetch, clock=lambda: NOW)
    return asyncio.run(
        lti13.verify_id_token(
            token,
            registration=_REGISTRATION,
            nonce="n1",
            keys=keys,
            now=NOW,
            leeway=leeway,
            max_bytes=16_384,
            target_link_uri=_TARGET,
        )
    )


_ID_HEADER = b'{"alg":"RS256","kid":"k1","typ":"JWT"}'
_ID_TOKEN = rs256(_ID_HEADER, json.dumps(_id_claims()).encode(), _RSA)


@FAST
@given(st.data())
def test_no_respelling_of_a_canonical_id_token_verifies(data: st.DataObject) -> None:
    assert _verify_id_token(_ID_TOKEN)["sub"] == "s1"
    padded = _ID_TOKEN + "=" * (-len(_ID_TOKEN.rsplit(".", 1)[1]) % 4)
    assert padded != _ID_TOKEN  # PyJWT takes it: our check comes first
    assert jwt.api_jws.decode(padded, _RSA.public_key(), algorithms=["RS256"])
    respelled, kind = data.draw(respellings(_ID_TOKEN))
    if kind == "same":
        respelled = respelled.strip() + "="  # the launch form is not trimmed; padding is refused
    with pytest.raises(InvalidIdTokenSignature if kind == "resigned" else MalformedIdToken):
        _verify_id_token(respelled)


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
@pytest.mark.parametrize("value", _NOT_TIMES + _NOT_TIMES_RAW, ids=repr)
def test_an_id_token_time_claim_must_be_a_whole_number_of_seconds(claim: str, value: Any) -> None:
    if isinstance(value, str) and value != "1750000000":
        payload = _raw(_id_claims(), {claim: value})
    else:
        payload = json.dumps(_id_claims(**{claim: value})).encode()
    with pytest.raises((MalformedIdToken, IdTokenExpired, IdTokenFromFuture)) as refused:
        _verify_id_token(rs256(_ID_HEADER, payload, _RSA), leeway=10**12)
    assert refused.type is MalformedIdToken or value in (-1, MAX_NUMERIC_DATE + 1, 10**30)


def test_an_id_token_whose_exp_is_nan_is_refused() -> None:
    token = rs256(_ID_HEADER, _raw(_id_claims(), {"exp": "NaN"}), _RSA)
    with pytest.raises(MalformedIdToken):
        _verify_id_token(token)


# -- over HTTP, on every store -------------------------------------------------------------------


@dataclass
class Deployment:
    """A server on one kind of store, an onboarded user, and what that user has used."""

    name: str
    server: Server
    canvas: FakeCanvas
    user: CanvasUser
    used_token: str
    session_id: str

    def post(self, token: str) -> httpx.Response:
        return httpx.post(self.server.url + "/api/sessions", json={"jwt_token": token}, timeout=10)

    def sessions(self) -> int:
        listed = httpx.get(self.server.url + "/api/sessions", headers={"x-session-id": self.session_id})
        assert listed.status_code == 200, listed.text
        return len(listed.json()["sessions"])


def _start(name: str, stack: ExitStack, tmp: Path) -> Server:
    settings: dict[str, Any] = {}
    if name in ("postgres", "redis"):
        settings["database_url"] = stack.enter_context(postgres_database())
    if name == "redis":
        settings["redis_url"] = stack.enter_context(redis_server()).url
    server = start_server(tmp, **settings)
    stack.callback(server.stop)
    return server


@pytest.fixture(scope="module", params=STORES)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    with ExitStack() as stack:
        server = _start(request.param, stack, tmp_path_factory.mktemp(request.param))
        canvas, user = server.add_institution(), CanvasUser()
        onboard(server, canvas, user)
        token = canvas.jwt_token(user, resource_link_id=secrets.token_hex(8))
        created = httpx.post(server.url + "/api/sessions", json={"jwt_token": token})
        assert created.status_code == 201, created.text
        yield Deployment(request.param, server, canvas, user, token, created.json()["sessionId"])


def _problem(response: httpx.Response, code: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    assert response.json()["code"] == code, response.text


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize("padding", ["=", "=="])
def test_a_used_canvas_jwt_padded_in_any_segment_makes_no_second_session(
    deployment: Deployment, segment: int, padding: str
) -> None:
    before = deployment.sessions()
    parts = deployment.used_token.split(".")
    parts[segment] += padding
    _problem(deployment.post(".".join(parts)), "malformed_token")
    _problem(deployment.post(deployment.used_token), "token_already_used")
    assert deployment.sessions() == before


@HTTP
@given(data=st.data())
def test_no_respelling_of_a_used_canvas_jwt_makes_a_session_on_any_store(
    deployment: Deployment, data: st.DataObject
) -> None:
    before = deployment.sessions()
    respelled, kind = data.draw(respellings(deployment.used_token))
    expected = {
        "malformed": "malformed_token",
        "resigned": "invalid_token_signature",
        "same": "token_already_used",
    }
    _problem(deployment.post(respelled), expected[kind])
    assert deployment.sessions() == before


# NaN, Infinity, numbers no double holds and lone surrogates, in claims that are times, that name
# the person, that are stored as their profile, and in one nobody reads.
_HOSTILE = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, '"\\ud800"', '"x\\udfffy"']
_CANVAS_CLAIMS = [
    "iat",
    "exp",
    "user_id",
    "lis_person_name_full",
    "custom_canvas_user_id",
    "roles",
    "custom_other",
]


def test_hostile_numbers_and_lone_surrogates_in_any_canvas_jwt_claim_are_a_4xx_on_every_store(
    deployment: Deployment,
) -> None:
    before = deployment.sessions()
    params = {k: v for k, v in deployment.canvas.launch_params(deployment.user).items() if v is not None}
    base = {**params, "consumer_key": deployment.canvas.consumer_key, "iat": int(time.time())}
    for claim in _CANVAS_CLAIMS:
        for literal in _HOSTILE:
            token = hs256(
                HEADER,
                _raw({**base, "custom_n": secrets.token_hex(4)}, {claim: literal}),
                deployment.canvas.secret,
            )
            response = deployment.post(token)
            assert 400 <= response.status_code < 500, (claim, literal, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    key = hs256(HEADER, json.dumps(base).encode()[:-1] + b', "\\ud800": 1}', deployment.canvas.secret)
    _problem(deployment.post(key), "malformed_token")
    assert deployment.sessions() == before


def test_a_canvas_jwt_accepted_at_the_last_second_of_its_age_stays_used_on_every_store(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The age limit and the marker's retention meet without a gap, on every store: with no
    skew allowed, a token used at exactly ``iat + jwt_max_age`` is refused when replayed then."""
    url = deployment.server.env["COMMONS_SESSION_DATABASE_URL"]
    redis_url = deployment.server.env.get("COMMONS_SESSION_REDIS_URL")
    iat = int(time.time()) - 300

    async def body() -> None:
        stores = make_stores(url, redis_url, idle_timeout=60, timeout=5)
        await stores.open()
        try:
            institution = await stores.records.get_institution(deployment.canvas.consumer_key)
            assert institution is not None
            terms = Terms("t-" + secrets.token_hex(4), "Be kind.")
            user = await stores.records.record_launch(
                Identity(institution.id, deployment.canvas.guid, deployment.user.lti_user_id),
                Profile(),
                {},
                iat,
            )
            await stores.records.accept_terms(user.id, terms.version, iat)
            policy = Policy(jwt_max_age=300, jwt_future_skew=0)
            token = deployment.canvas.jwt_token(deployment.user, iat=iat, custom_n=secrets.token_hex(4))
            last = SessionService(stores, policy, terms, clock=lambda: iat + 300)
            await last.create_from_jwt(token)
            with pytest.raises(TokenReplayed):
                await last.create_from_jwt(token)
            with pytest.raises(TokenExpired):  # and a moment later it is too old anyway
                await SessionService(stores, policy, terms, clock=lambda: iat + 300.001).create_from_jwt(
                    token
                )
        finally:
            await stores.close()

    asyncio.run(body())


# -- over HTTP: the LTI 1.3 id_token ------------------------------------------------------------


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as served:
        yield served


@pytest.fixture(scope="module")
def platform(deployment: Deployment, jwks: JwksServer) -> Platform:
    """An LTI 1.3 registration on the deployment's own database."""
    server = deployment.server
    canvas = server.add_institution()
    found = Platform(jwks, canvas.consumer_key, canvas.secret, target_link_uri=server.url + "/api/lti/launch")

    async def register() -> None:
        stores = make_stores(server.env["COMMONS_SESSION_DATABASE_URL"], idle_timeout=60, timeout=5)
        await stores.open()
        try:
            await stores.records.add_lti13_registration(
                canvas.consumer_key,
                issuer=found.issuer,
                client_id=found.client_id,
                deployment_ids=(found.deployment_id,),
                jwks_url=found.jwks_url,
                auth_url=found.auth_url,
                now=time.time(),
            )
        finally:
            await stores.close()

    asyncio.run(register())
    return found


def _landed(response: httpx.Response) -> None:
    assert response.status_code == 303, response.text


@HTTP
@given(data=st.data())
def test_no_respelling_of_an_id_token_launches_and_none_uses_up_the_login_on_any_store(
    deployment: Deployment, platform: Platform, data: st.DataObject
) -> None:
    server, user = deployment.server, CanvasUser()
    started = login(server, platform)
    token = platform.id_token(user, started.nonce)
    respelled, kind = data.draw(respellings(token))
    if kind == "same":
        respelled = respelled.strip() + "=="
    refused = post_launch(server, respelled, started.state, started.binding)
    _problem(refused, "invalid_id_token_signature" if kind == "resigned" else "malformed_id_token")
    _landed(post_launch(server, token, started.state, started.binding))
    again = post_launch(server, respelled, started.state, started.binding)
    assert 400 <= again.status_code < 500 and again.status_code != 303, again.text


_ID_CLAIMS = ["exp", "iat", "nbf", "nonce", "sub", "name", "email", CLAIM + "lti11_legacy_user_id"]


def test_hostile_numbers_and_lone_surrogates_in_any_id_token_claim_are_a_4xx_on_every_store(
    deployment: Deployment, platform: Platform
) -> None:
    server, user = deployment.server, CanvasUser()
    started = login(server, platform)
    claims = platform.claims(user, started.nonce)
    header = json.dumps({"alg": "RS256", "kid": platform.kid, "typ": "JWT"}).encode()
    for claim in _ID_CLAIMS:
        for literal in _HOSTILE:
            token = rs256(header, _raw(claims, {claim: literal}), platform.private_key)
            response = post_launch(server, token, started.state, started.binding)
            assert 400 <= response.status_code < 500, (claim, literal, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    custom = rs256(
        header, _raw(claims, {CLAIM + "custom": '{"n": 1e400, "s": "\\ud800"}'}), platform.private_key
    )
    _problem(post_launch(server, custom, started.state, started.binding), "malformed_id_token")
    nan_exp = rs256(header, _raw(claims, {"exp": "NaN"}), platform.private_key)
    _problem(post_launch(server, nan_exp, started.state, started.binding), "malformed_id_token")
    # None of it used up the login.
    _landed(post_launch(server, platform.id_token(user, started.nonce), started.state, started.binding))


def test_the_strategies_draw_every_kind_of_respelling() -> None:
    """A guard on the strategy itself: each kind of respelling is drawn and differs."""
    seen: set[str] = set()

    @settings(max_examples=200, database=None, deadline=None)
    @given(respellings(_ID_TOKEN))
    def draw(pair: tuple[str, str]) -> None:
        seen.add(pair[1])
        assert pair[0] != _ID_TOKEN

    draw()
    assert seen == {"malformed", "resigned", "same"}


# -- the other single-use values: OAuth 1.0a nonces, 1.3 state, hand-off codes --------------------
# Each is keyed on its decoded value (nonce, state) or must be canonical (code), so a spelling
# the signature check treats as the same value is the same key. These pin it; they also held
# before issue 11.

_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


@st.composite
def percent_respelled(draw: st.DrawFn, body: str) -> str:
    """The same form, each character of each name and value written literally or as %XX in
    either case of hex, as a form encoder may."""

    def spell(text: str) -> str:
        out = []
        for byte in text.encode("utf-8"):
            char = chr(byte)
            if char in _UNRESERVED and draw(st.booleans()):
                out.append(char)
            else:
                hexed = f"{byte:02X}"
                out.append("%" + (hexed.lower() if draw(st.booleans()) else hexed))
        return "".join(out)

    return "&".join(f"{spell(k)}={spell(v)}" for k, v in parse_qsl(body, keep_blank_values=True))


def _launch(deployment: Deployment, body: str, headers: dict[str, str], query: str = "") -> httpx.Response:
    url = deployment.server.url + "/api/lti" + (f"?{query}" if query else "")
    return httpx.post(url, content=body, headers=headers)


@HTTP
@given(data=st.data())
def test_no_spelling_or_placement_of_a_used_oauth_nonce_launches_again_on_any_store(
    deployment: Deployment, data: st.DataObject
) -> None:
    body, headers = deployment.canvas.signed_launch(deployment.server.url + "/api/lti", CanvasUser())
    _landed(_launch(deployment, body, headers))
    pairs = parse_qsl(body, keep_blank_values=True)
    oauth = [(k, v) for k, v in pairs if k.startswith("oauth_")]
    rest = urlencode([(k, v) for k, v in pairs if not k.startswith("oauth_")])
    where = data.draw(st.sampled_from(["respelled", "header", "query", "header and body", "query and body"]))
    if where == "respelled":
        respelled = data.draw(percent_respelled(body))
        assert respelled != body
        _problem(_launch(deployment, respelled, headers), "replayed_nonce")
        return
    authorization = "OAuth " + ", ".join(f'{k}="{quote(v, safe="")}"' for k, v in oauth)
    if where == "header":
        again = _launch(deployment, rest, {**headers, "authorization": authorization})
    elif where == "query":
        again = _launch(deployment, rest, headers, urlencode(oauth))
    elif where == "query and body":
        again = _launch(deployment, body, headers, urlencode(oauth))
    else:
        again = _launch(deployment, body, {**headers, "authorization": authorization})
    assert 400 <= again.status_code < 500, again.text  # refused: never a second session
    assert again.headers["content-type"].startswith("application/problem+json")


def test_no_spelling_of_a_used_13_state_or_a_hand_off_code_is_accepted_on_any_store(
    deployment: Deployment, platform: Platform
) -> None:
    server, user = deployment.server, CanvasUser()
    started = login(server, platform)
    token = platform.id_token(user, started.nonce)
    landed = post_launch(server, token, started.state, started.binding, accept="text/html")
    _landed(landed)
    code = parse_qs(urlsplit(landed.headers["location"]).query)["code"][0]
    cookie = {
        "cookie": f"lti1p3_state={started.binding}",
        "content-type": "application/x-www-form-urlencoded",
    }
    for state in (
        "".join(f"%{b:02x}" for b in started.state.encode()),  # the same state, percent-encoded
        started.state + "=",
        started.state + "%20",
        " " + started.state,
        started.state.translate(_STANDARD),
    ):
        body = f"id_token={token}&state={state}"
        again = httpx.post(
            server.url + "/api/lti/launch", content=body, headers={**cookie, "accept": "application/json"}
        )
        assert 400 <= again.status_code < 500, (state, again.text)
    last = B64URL.index(code[-1])
    exchange = server.url + "/api/sessions/exchange"
    for respelled in (code + "=", code + "==", code.translate(_STANDARD), code[:-1] + B64URL[last | 1]):
        if respelled != code:
            _problem(httpx.post(exchange, json={"code": respelled}), "invalid_exchange_code")
    traded = httpx.post(exchange, json={"code": f" {code}\n"})  # trimmed by the route: the same code
    assert traded.status_code == 200, traded.text
    _problem(httpx.post(exchange, json={"code": code}), "invalid_exchange_code")
