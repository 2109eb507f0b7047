"""Property-based tests (Hypothesis) for everything that reads what a client sends: the session
id carriers, the Canvas JWT parser and verifier, the LTI 1.1 OAuth parser and verifier, and the
HTTP routes that take an id or a token.

The properties: arbitrary input only ever raises the documented error classes (never a crash,
never a 500), and nothing authenticates without the right id, token or secret. Example counts
are bounded so the whole file stays within a few seconds."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import string
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jwt.algorithms import HMACAlgorithm
from starlette.datastructures import Headers, QueryParams

from commons_session.domain import tokens
from commons_session.domain.ids import ID_BYTES, is_well_formed, new_session_id
from commons_session.domain.models import Institution
from commons_session.errors import (
    BadRequest,
    ConflictingSessionIds,
    InvalidClaims,
    InvalidSignature,
    LaunchError,
    MalformedToken,
    TokenError,
    TokenExpired,
    TokenTooLarge,
)
from commons_session.http.carriers import extract_session_id
from commons_session.lti import v11 as lti

from .canvas import CanvasUser, FakeCanvas
from .conftest import Server, onboard

FAST = settings(max_examples=150, deadline=None, database=None, print_blob=True)
HTTP = settings(
    max_examples=50,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

NOW = 1_750_000_000.0
MAX_AGE, SKEW, MAX_BYTES = 300, 60, 16_384
SECRET = "the-institutions-shared-secret"
INSTITUTION = Institution(7, "key-properties", "Property U", (SECRET,))
OTHER_SECRET = "another-institutions-secret"
LAUNCH_URL = "https://commons.example.edu/api/lti"
LAUNCH_TIME = int(time.time())  # oauthlib checks launch timestamps against the real clock

B64URL = string.ascii_letters + string.digits + "-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, secret: str) -> str:
    """A compact JWS signed with HMAC-SHA256, header and payload written exactly as given."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(raw_header)}.{b64url(raw_payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def canvas_token(secret: str = SECRET, **overrides: Any) -> str:
    """A token as Canvas signs it (PyJWT, HS256, typ JWT), issued at NOW."""
    payload = {
        "consumer_key": INSTITUTION.consumer_key,
        "iat": int(NOW),
        "user_id": "abc123",
        "tool_consumer_instance_guid": "guid:canvas-lms",
        **overrides,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT"})


def verify(token: str, institution: Institution = INSTITUTION) -> dict[str, Any]:
    return tokens.verify_token(
        token, institution, now=NOW, max_age=MAX_AGE, future_skew=SKEW, max_bytes=MAX_BYTES
    )


# -- session ids --------------------------------------------------------------------------------


@FAST
@given(st.binary(min_size=ID_BYTES, max_size=ID_BYTES))
def test_every_256_bit_value_written_as_base64url_is_a_well_formed_id(raw: bytes) -> None:
    assert is_well_formed(b64url(raw))


def _canonical_id(text: str) -> bool:
    """The oracle: ``text`` is the unpadded base64url of exactly 32 bytes, written canonically."""
    if not text.isascii() or set(text) - set(B64URL):
        return False
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return False
    return len(raw) == ID_BYTES and b64url(raw) == text


@FAST
@given(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet=B64URL, min_size=42, max_size=44),
        st.text(alphabet=B64URL + "=+/ .\x00é", min_size=43, max_size=43),
    )
)
def test_only_canonical_base64url_of_256_bits_is_a_well_formed_id(text: str) -> None:
    assert is_well_formed(text) == _canonical_id(text)


def test_new_ids_are_well_formed_and_never_repeat() -> None:
    drawn = [new_session_id() for _ in range(20_000)]
    assert all(is_well_formed(i) for i in drawn)
    assert len(set(drawn)) == len(drawn)
    # 256 random bits: each of the 6 bits of every full character is set about half the time.
    ones = sum(bin(B64URL.index(c)).count("1") for i in drawn for c in i[:42])
    total = len(drawn) * 42 * 6
    assert abs(ones / total - 0.5) < 0.01


# -- carriers: structured -----------------------------------------------------------------------

# Values that travel unchanged through every carrier: no quotes, separators or edge spaces.
_ID_VALUES = st.one_of(
    st.sampled_from([new_session_id(), new_session_id(), new_session_id()]),
    st.text(alphabet=B64URL, min_size=1, max_size=50),
)
_BLANK = st.sampled_from(["", " ", "  "])
_CARRIER_VALUE = st.one_of(_ID_VALUES, _ID_VALUES, _BLANK)
_ORDER = ("cookie", "header", "query", "state", "body")


@st.composite
def structured_requests(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "cookie": draw(st.lists(_CARRIER_VALUE, max_size=2)),
        "header": draw(st.lists(_CARRIER_VALUE, max_size=2)),
        "query": draw(st.lists(_CARRIER_VALUE, max_size=2)),
        "state": draw(st.lists(_CARRIER_VALUE, max_size=3)),
        "body": draw(st.one_of(st.none(), _CARRIER_VALUE, st.integers(), st.lists(_ID_VALUES, max_size=1))),
        "cookies_in_one_header": draw(st.booleans()),
        "decoys": draw(st.lists(_ID_VALUES, max_size=2)),
        "query_order": draw(st.permutations(range(3))),
    }


def _build(request: dict[str, Any]) -> tuple[Headers, QueryParams, dict[str, Any]]:
    cookies = [f"session={v}" for v in request["cookie"]]
    # Cookies whose names only resemble ours must never be read.
    cookies += [f"{name}={v}" for name, v in zip(["xsession", "sessions"], request["decoys"], strict=False)]
    raw: list[tuple[bytes, bytes]] = []
    if request["cookies_in_one_header"] and cookies:
        raw.append((b"cookie", "; ".join(cookies).encode()))
    else:
        raw.extend((b"cookie", c.encode()) for c in cookies)
    raw.extend((b"x-session-id", v.encode()) for v in request["header"])
    # The relative order of different query names does not matter; of one name it does.
    groups = [
        [("session-id", v) for v in request["query"]],
        [("state", v) for v in request["state"]],
        [("sessionId", v) for v in request["decoys"]],  # a body name in the query is nothing
    ]
    pairs = [pair for i in request["query_order"] for pair in groups[i]]
    body: dict[str, Any] = {"sessionId": request["body"]} if request["body"] is not None else {}
    return Headers(raw=raw), QueryParams(urlencode(pairs)), body


@FAST
@given(structured_requests())
def test_carriers_follow_the_documented_precedence_and_never_choose_between_two_ids(
    request: dict[str, Any],
) -> None:
    headers, query, body = _build(request)
    present: list[tuple[str, str]] = []
    for carrier in _ORDER:
        values = request[carrier]
        if carrier == "state":
            values = values[:1]  # later state values are not a carrier
        if carrier == "body":
            values = [values] if isinstance(values, str) else []
        present.extend((carrier, v) for v in values if v.strip())

    if len({v for _, v in present}) > 1:
        with pytest.raises(ConflictingSessionIds):
            extract_session_id(headers, query, body)
        return
    carried = extract_session_id(headers, query, body)
    if not present:
        assert carried is None
    else:
        assert carried is not None
        assert (carried.carrier, carried.session_id) == present[0]


# -- carriers: arbitrary ------------------------------------------------------------------------

_HEADER_NAMES = st.one_of(
    st.sampled_from(["cookie", "x-session-id", "x-session-ids", "session", "authorization", "user-agent"]),
    st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=12),
)
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(
    raw_headers=st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=80)), max_size=6),
    query=st.one_of(
        st.text(max_size=120),
        st.lists(
            st.tuples(st.sampled_from(["session-id", "state", "sessionId", "x"]), st.text(max_size=30)),
            max_size=5,
        ).map(urlencode),
    ),
    body=st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(["sessionId", "version", "x"]), _JSON, max_size=3),
    ),
)
def test_arbitrary_carriers_never_raise_but_a_conflict_and_only_return_what_was_sent(
    raw_headers: list[tuple[str, bytes]], query: str, body: dict[str, Any] | None
) -> None:
    headers = Headers(raw=[(name.encode(), value) for name, value in raw_headers])
    params = QueryParams(query)
    try:
        carried = extract_session_id(headers, params, body)
    except ConflictingSessionIds:
        return
    if carried is None:
        return
    assert carried.session_id and carried.session_id == carried.session_id.strip()
    sent = {
        "cookie": headers.getlist("cookie"),
        "header": headers.getlist("x-session-id"),
        "query": params.getlist("session-id"),
        "state": params.getlist("state")[:1],
        "body": [body["sessionId"]] if body and isinstance(body.get("sessionId"), str) else [],
    }
    assert any(carried.session_id in value for value in sent[carried.carrier]), (carried, sent)


# -- the Canvas JWT -----------------------------------------------------------------------------

TOKEN_ERRORS = (TokenError, TokenTooLarge)
# Header values an attacker might try: other algorithms, keys of their own, unencoded payloads.
_HOSTILE_HEADERS = st.sampled_from(
    [
        {"alg": "none"},
        {"alg": "None", "typ": "JWT"},
        {"alg": "RS256", "typ": "JWT"},
        {"alg": "HS512", "typ": "JWT"},
        {"alg": "ES256"},
        {"alg": "HS256", "jwk": {"kty": "oct", "k": b64url(b"attacker")}},
        {"alg": "HS256", "jku": "https://attacker.example/keys.json"},
        {"alg": "HS256", "kid": "../../../dev/null"},
        {"alg": "HS256", "b64": False, "crit": ["b64"]},
        {"alg": "HS256", "crit": ["exp"]},
        {"typ": "JWT"},
        {},
    ]
)


@FAST
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.text(alphabet=B64URL + "=.+/", max_size=40), min_size=1, max_size=5).map(".".join),
        st.tuples(_JSON, _JSON, st.text(alphabet=B64URL, max_size=43)).map(
            lambda t: ".".join([b64url(json.dumps(t[0]).encode()), b64url(json.dumps(t[1]).encode()), t[2]])
        ),
    )
)
def test_arbitrary_strings_only_raise_documented_token_errors(token: str) -> None:
    try:
        key = tokens.read_consumer_key(token, MAX_BYTES)
    except (MalformedToken, InvalidClaims, TokenTooLarge):
        pass
    else:
        assert key and key.isprintable()
    with pytest.raises(TOKEN_ERRORS):
        verify(token)


def _mutate(token: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "segment", "resign", "header"]))
    if kind in ("replace", "insert", "delete"):
        i = data.draw(st.integers(0, len(token) - 1))
        c = data.draw(st.sampled_from(B64URL + ".=+/ \t%é\x00"))
        if kind == "replace":
            return token[:i] + c + token[i + 1 :]
        if kind == "insert":
            return token[:i] + c + token[i:]
        return token[:i] + token[i + 1 :]
    header, payload, signature = token.split(".")
    if kind == "segment":
        parts = data.draw(st.permutations([header, payload, signature]))
        return ".".join(parts[: data.draw(st.integers(1, 4))])
    if kind == "resign":  # the same claims, signed with a key that is not the institution's
        secret = data.draw(st.sampled_from([OTHER_SECRET, "", SECRET + " ", SECRET.upper()]))
        return hs256({"alg": "HS256", "typ": "JWT"}, base64.urlsafe_b64decode(payload + "=="), secret)
    # A hostile header over the original payload, keeping the original signature or none.
    new_header = b64url(json.dumps(data.draw(_HOSTILE_HEADERS)).encode())
    return f"{new_header}.{payload}.{data.draw(st.sampled_from([signature, '']))}"


@FAST
@given(st.data())
def test_a_token_changed_in_any_way_never_verifies(data: st.DataObject) -> None:
    original = canvas_token(user_id=data.draw(st.text(min_size=1, max_size=20)))
    assert verify(original)["consumer_key"] == INSTITUTION.consumer_key
    mutated = _mutate(original, data)
    assume(mutated != original)
    with pytest.raises(TOKEN_ERRORS):
        verify(mutated)


@FAST
@given(st.text(min_size=1, max_size=40).filter(lambda s: s != SECRET))
def test_no_other_secret_verifies_a_token(secret: str) -> None:
    token = canvas_token()
    assert verify(token)
    with pytest.raises(TOKEN_ERRORS):
        verify(token, Institution(7, INSTITUTION.consumer_key, "U", (secret,)))


_TIMES = st.one_of(
    st.floats(NOW - 2 * MAX_AGE, NOW + 2 * SKEW),
    st.integers(int(NOW) - 2 * MAX_AGE, int(NOW) + 2 * SKEW),
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.just(float("nan")),
    st.just(10**400),
    st.integers(-(2**70), 2**70),
)


@FAST
@given(
    consumer_key=st.one_of(st.just(INSTITUTION.consumer_key), st.text(max_size=20), st.none(), st.integers()),
    iat=_TIMES,
    exp=st.one_of(st.just("absent"), _TIMES),
    nbf=st.one_of(st.just("absent"), _TIMES),
    extra=st.dictionaries(st.text(max_size=10), _JSON, max_size=3),
)
def test_a_correctly_signed_token_is_accepted_only_with_valid_claims(
    consumer_key: Any, iat: Any, exp: Any, nbf: Any, extra: dict[str, Any]
) -> None:
    payload: dict[str, Any] = {**extra, "consumer_key": consumer_key, "iat": iat}
    for name, value in (("exp", exp), ("nbf", nbf)):
        if value != "absent":
            payload[name] = value
        else:
            payload.pop(name, None)
    token = hs256({"alg": "HS256", "typ": "JWT"}, json.dumps(payload, allow_nan=True).encode(), SECRET)
    try:
        claims = verify(token)
    except (InvalidClaims, TokenExpired, MalformedToken):
        return
    assert claims["consumer_key"] == INSTITUTION.consumer_key
    # Every time claim that passes is a whole number of seconds: no bool, float, NaN or infinity.
    assert type(claims["iat"]) is int
    assert NOW - MAX_AGE <= claims["iat"] <= NOW + SKEW
    if "exp" in claims:
        assert type(claims["exp"]) is int and claims["exp"] + SKEW > NOW
    if "nbf" in claims:
        assert type(claims["nbf"]) is int and claims["nbf"] <= NOW + SKEW


@FAST
@given(
    st.lists(st.sampled_from(["consumer_key", "user_id", "iat", "alg"]), min_size=1, max_size=3),
    st.sampled_from(["header", "payload"]),
)
def test_a_repeated_json_key_anywhere_is_malformed_even_when_signed(repeated: list[str], where: str) -> None:
    def with_repeats(obj: dict[str, Any]) -> bytes:
        text = json.dumps(obj)
        extra = ", ".join(f'"{name}": "again"' for name in repeated)
        return (text[:-1] + ", " + extra + "}").encode()

    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    payload = {"consumer_key": INSTITUTION.consumer_key, "iat": NOW, "user_id": "u", "alg": "x"}
    if where == "header":
        header["consumer_key"] = header["user_id"] = header["iat"] = "x"
        token = hs256(with_repeats(header), payload, SECRET)
    else:
        token = hs256(header, with_repeats(payload), SECRET)
    with pytest.raises(MalformedToken):  # in the service's order: the key is read first
        tokens.read_consumer_key(token, MAX_BYTES)
        verify(token)


# The verifier used PyJWT until it was replaced by ``hmac`` (docs/performance.md). PyJWT stays the
# oracle on canonical tokens: a token with a segment that is not canonical base64url (padding,
# whitespace, "+" or "/", stray bits: checked here independently of ``domain.jws``) is malformed,
# and every other token PyJWT's HS256 verifier (plus the strict JSON read of the header and
# payload the service always did first) accepted is accepted, and everything it refused is
# refused, for the same reason, except a ``crit`` header, which is now refused whatever it lists.


class _OracleHS256(HMACAlgorithm):
    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def check_key_length(self, key: bytes) -> str | None:
        return None


_ORACLE = jwt.PyJWS(algorithms=["HS256"])
_ORACLE.unregister_algorithm("HS256")
_ORACLE.register_algorithm("HS256", _OracleHS256())


def _canonical_b64url(segment: str) -> bool:
    """The oracle for one segment: only base64url characters, and the one spelling of its bytes."""
    if set(segment) - set(B64URL):
        return False
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return b64url(raw) == segment


def _oracle(token: str, secrets: tuple[str, ...]) -> str:
    """What the PyJWT-based verifier said: "ok" or the name of the error it raised."""
    from commons_session.domain.strict_json import json_object

    def canonical(segment: str) -> bytes:
        if not _canonical_b64url(segment):
            raise MalformedToken()
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    try:
        if len(token) > MAX_BYTES:
            raise TokenTooLarge()
        parts = token.split(".")
        if not token.isascii() or len(parts) != 3 or not all(parts[:2]):
            raise MalformedToken()
        header_bytes, payload_bytes, _ = (canonical(part) for part in parts)
        header = json_object(header_bytes, "header", MalformedToken)
        payload = json_object(payload_bytes, "payload", MalformedToken)
        key = payload.get("consumer_key")
        if not isinstance(key, str) or not key or not key.isprintable():
            raise InvalidClaims()
        if "crit" in header:  # the one deliberate difference, refused with PyJWT's header checks
            raise MalformedToken()
        for secret in secrets:
            try:
                raw = _ORACLE.decode_complete(token, secret, algorithms=["HS256"])["payload"]
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAlgorithmError as exc:
                raise InvalidSignature() from exc
            except jwt.PyJWTError as exc:
                raise MalformedToken() from exc
        else:
            raise InvalidSignature()
        json_object(raw, "payload", MalformedToken)
    except TOKEN_ERRORS as exc:
        return type(exc).__name__
    return "ok"


def _ours(token: str, secrets: tuple[str, ...]) -> str:
    institution = Institution(7, INSTITUTION.consumer_key, "U", secrets)
    try:
        tokens.read_consumer_key(token, MAX_BYTES)
        # Far from any time limit: only the signature and the header decide.
        tokens.verify_token(token, institution, now=NOW, max_age=0, future_skew=10**12, max_bytes=MAX_BYTES)
    except TOKEN_ERRORS as exc:
        return type(exc).__name__
    return "ok"


_HEADERS: st.SearchStrategy[dict[str, Any]] = st.one_of(
    _HOSTILE_HEADERS,
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "HS256 ", "hs256", "", None, 256, ["HS256"]])},
        optional={
            "typ": st.sampled_from(["JWT", "jwt", "at+jwt", 1, None]),
            "kid": st.sampled_from(["k1", 7, None, ["k"], ""]),
            "crit": st.sampled_from([["b64"], [], "b64", ["exp"], [1]]),
            "b64": st.sampled_from([True, False, "false", 0, None]),
        },
    ),
)


def _respell(segment: str, data: st.DataObject) -> str:
    """The same bytes or nearly: padded, with stray bits in the last character, or a character
    outside base64url."""
    kind = data.draw(st.sampled_from(["pad", "bits", "alphabet", "as is"]))
    if kind == "pad":
        return segment + data.draw(st.sampled_from(["=", "==", "===", "===="]))
    if kind == "bits" and segment:
        last = B64URL.index(segment[-1])
        return segment[:-1] + B64URL[(last + data.draw(st.integers(1, 3))) % 64]
    if kind == "alphabet" and segment:
        i = data.draw(st.integers(0, len(segment) - 1))
        return segment[:i] + data.draw(st.sampled_from("+/= \n%")) + segment[i + 1 :]
    return segment


@FAST
@given(st.data())
def test_the_verifier_accepts_and_refuses_exactly_what_pyjwt_did(data: st.DataObject) -> None:
    secrets = data.draw(st.sampled_from([(SECRET,), (OTHER_SECRET, SECRET), (OTHER_SECRET,)]))
    payload = {"consumer_key": INSTITUTION.consumer_key, "iat": int(NOW), "user_id": "u"}
    token = hs256(data.draw(_HEADERS), payload, data.draw(st.sampled_from([SECRET, OTHER_SECRET])))
    segments = token.split(".")
    which = data.draw(st.sampled_from([None, 0, 1, 2]))
    if which is not None:
        segments[which] = _respell(segments[which], data)
    token = ".".join(segments)
    if data.draw(st.booleans()):
        token = _mutate(token, data) if token.count(".") == 2 else token
    assert _ours(token, secrets) == _oracle(token, secrets), token


def test_a_canonical_token_from_pyjwt_verifies_with_the_current_or_the_previous_secret() -> None:
    token = canvas_token()
    assert _ours(token, (SECRET,)) == _oracle(token, (SECRET,)) == "ok"
    assert _ours(token, (OTHER_SECRET, SECRET)) == "ok"
    padded = ".".join(s + "=" * (-len(s) % 4) for s in token.split("."))
    assert padded != token
    assert _ours(padded, (SECRET,)) == _oracle(padded, (SECRET,)) == "MalformedToken"  # PyJWT allowed it
    assert _ORACLE.decode_complete(padded, SECRET, algorithms=["HS256"])  # ... as it still does
    assert _ours(token, (OTHER_SECRET,)) == "InvalidSignature"


# -- the LTI 1.1 launch -------------------------------------------------------------------------

LAUNCH_ERRORS = (LaunchError, BadRequest)
_CANVAS = FakeCanvas(INSTITUTION.consumer_key, SECRET)
_OAUTH_NAMES = [
    "oauth_consumer_key",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_version",
    "oauth_callback",
    "oauth_token",
    "user_id",
]


def _launch(body: str, institution: Institution | None = INSTITUTION) -> Any:
    pairs = lti.parse_form(body)
    return lti.verify_launch(
        uri=LAUNCH_URL,
        body=body,
        content_type="application/x-www-form-urlencoded",
        pairs=pairs,
        institution=institution,
        now=time.time(),  # oauthlib checks the timestamp against the real clock too
        timestamp_window=5_400,
    )


@FAST
@given(st.text(max_size=300))
def test_arbitrary_form_bodies_parse_or_raise_invalid_oauth_request(body: str) -> None:
    try:
        pairs = lti.parse_form(body)
    except LaunchError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(_OAUTH_NAMES), st.text(max_size=10)),
            st.one_of(st.sampled_from(["HMAC-SHA1", "1.0", "", "1"]), st.text(max_size=10)),
        ),
        max_size=10,
    )
)
def test_oauth_params_are_each_present_once_and_hmac_sha1_or_refused(pairs: list[tuple[str, str]]) -> None:
    try:
        found = lti.oauth_params(pairs)
    except LaunchError:
        return
    names = [k for k, _ in pairs if k.startswith("oauth_")]
    assert len(names) == len(set(names))
    for required in ("oauth_consumer_key", "oauth_signature", "oauth_timestamp", "oauth_nonce"):
        assert found[required]
    assert found["oauth_signature_method"] == "HMAC-SHA1"
    assert found.get("oauth_version", "1.0") == "1.0"
    key = found["oauth_consumer_key"]  # looked up next: only a key some registration can have
    assert len(key) <= 255 and key.isascii() and key.isprintable() and " " not in key


@st.composite
def launch_bodies(draw: st.DrawFn) -> str:
    """Bodies that look like launches: the oauth_* names present, values arbitrary."""
    pairs = [(name, draw(st.text(max_size=20))) for name in _OAUTH_NAMES if draw(st.booleans())]
    pairs.append(("oauth_signature_method", draw(st.sampled_from(["HMAC-SHA1", "PLAINTEXT", "RSA-SHA1"]))))
    pairs.append(("oauth_timestamp", draw(st.sampled_from([str(LAUNCH_TIME), "0", "-1", "1e9", "x"]))))
    pairs.append(("oauth_consumer_key", draw(st.sampled_from([INSTITUTION.consumer_key, "other"]))))
    pairs += draw(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=4))
    order = draw(st.permutations(range(len(pairs))))
    return urlencode([pairs[i] for i in order])


@FAST
@given(st.one_of(st.text(max_size=300), launch_bodies()), st.booleans())
def test_arbitrary_launches_only_raise_launch_errors(body: str, known: bool) -> None:
    with pytest.raises(LAUNCH_ERRORS):
        _launch(body, INSTITUTION if known else None)


def _mutate_launch(body: str, data: st.DataObject) -> str:
    pairs = parse_qsl(body, keep_blank_values=True)
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "drop", "repeat", "add", "change"]))
    if kind in ("replace", "insert", "delete"):
        i = data.draw(st.integers(0, len(body) - 1))
        c = data.draw(st.sampled_from("aZ0=&%+._-~\x00é"))
        if kind == "replace":
            return body[:i] + c + body[i + 1 :]
        if kind == "insert":
            return body[:i] + c + body[i:]
        return body[:i] + body[i + 1 :]
    i = data.draw(st.integers(0, len(pairs) - 1))
    if kind == "drop":
        del pairs[i]
    elif kind == "repeat":
        pairs.append((pairs[i][0], data.draw(st.text(max_size=8))))
    elif kind == "add":
        pairs.append((data.draw(st.text(min_size=1, max_size=8)), data.draw(st.text(max_size=8))))
    else:
        pairs[i] = (pairs[i][0], pairs[i][1] + data.draw(st.text(min_size=1, max_size=4)))
    return urlencode(pairs)


# One fixed launch, so that Hypothesis can replay and shrink its mutations.
SIGNED_LAUNCH, _ = _CANVAS.signed_launch(
    LAUNCH_URL, CanvasUser(lti_user_id="fixed-user"), timestamp=LAUNCH_TIME, nonce="fixed-nonce-" + "n" * 28
)


@FAST
@given(st.data())
def test_a_launch_changed_in_meaning_never_verifies(data: st.DataObject) -> None:
    body = SIGNED_LAUNCH
    assert _launch(body)["user_id"] == "fixed-user"
    mutated = _mutate_launch(body, data)
    try:
        params = _launch(mutated)
    except LAUNCH_ERRORS:
        return
    # Only a different spelling of the very same parameters may verify (OAuth signs the
    # normalised parameters, e.g. "+" and "%20" are one space).
    assert sorted(parse_qsl(mutated, keep_blank_values=True)) == sorted(
        parse_qsl(body, keep_blank_values=True)
    )
    assert params == _launch(body)


@FAST
@given(st.text(min_size=1, max_size=40).filter(lambda s: s != SECRET))
def test_no_other_secret_verifies_a_launch(secret: str) -> None:
    body, _ = _CANVAS.signed_launch(LAUNCH_URL, CanvasUser(), secret=secret)
    with pytest.raises(LAUNCH_ERRORS):
        _launch(body)


# -- over HTTP ----------------------------------------------------------------------------------


class Known:
    """Ids and tokens that were good once, on the shared server: presented again they must
    still never authenticate."""

    def __init__(self, server: Server) -> None:
        canvas = server.add_institution()
        user = CanvasUser()
        onboard(server, canvas, user)
        url = server.url
        self.used_token = canvas.jwt_token(user, custom_request="used")
        created = httpx.post(url + "/api/sessions", json={"jwt_token": self.used_token})
        assert created.status_code == 201, created.text
        self.dead_id = created.json()["sessionId"]
        ended = httpx.get(url + "/api/sessions/logout", headers={"x-session-id": self.dead_id})
        assert ended.status_code == 204, ended.text
        self.forged_token = canvas.jwt_token(user, secret="not-the-secret", custom_request="forged")


@pytest.fixture(scope="module")
def known(server: Server) -> Known:
    return Known(server)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _sendable(value: bytes) -> bytes:
    """What h11 will put in a header: visible ASCII, spaces, tabs and obs-text, trimmed."""
    return bytes(c for c in value if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")


_HEADER_VALUE = st.binary(max_size=120).map(_sendable)
_SAFE_HEADER_NAMES = st.one_of(
    st.sampled_from(
        ["x-session-id", "user-agent", "accept", "origin", "referer", "x-forwarded-for", "authorization"]
    ),
    st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=12).filter(
        lambda n: (
            n not in {"host", "content-length", "transfer-encoding", "connection", "cookie", "expect"}
            and not n.startswith("-")
        )
    ),
)


@st.composite
def hostile_requests(draw: st.DrawFn, known: Known) -> dict[str, Any]:
    secrets_pool = st.sampled_from([known.dead_id, known.used_token, known.forged_token, "A" * 43, ""])
    value = st.one_of(secrets_pool, st.text(max_size=40))
    headers = draw(
        st.lists(
            st.tuples(_SAFE_HEADER_NAMES, st.one_of(_HEADER_VALUE, value.map(str.encode).map(_sendable)))
        )
    )
    cookie_pairs = draw(
        st.lists(st.tuples(st.sampled_from(["session", "sessions", "other", ""]), value), max_size=3)
    )
    if cookie_pairs:
        cookie = "; ".join(f"{k}={v}" for k, v in cookie_pairs).encode("utf-8", "replace")
        headers.append(("cookie", _sendable(cookie)))
    params = draw(
        st.lists(
            st.tuples(st.sampled_from(["session-id", "state", "sessionId", "jwt_token", "x"]), value),
            max_size=4,
        )
    )
    fields = draw(
        st.dictionaries(
            st.sampled_from(["jwt_token", "sessionId", "version", "csrf_token"]),
            st.one_of(value, _JSON),
            max_size=4,
        )
    )
    media = draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]))
    kind = draw(st.sampled_from(["json", "form", "bytes", "none"]))
    if kind == "json":
        content = json.dumps(fields).encode()
    elif kind == "form":
        content = urlencode(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
        ).encode()
    elif kind == "bytes":
        content = draw(st.binary(max_size=300))
    else:
        content = b""
    if media:
        headers.append(("content-type", media.encode()))
    return {
        "headers": [(k.encode() if isinstance(k, str) else k, v) for k, v in headers],
        "params": params,
        "content": content,
        "path_id": draw(st.one_of(secrets_pool, st.text(alphabet=B64URL, min_size=1, max_size=50))),
    }


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert response.status_code not in (200, 201, 204), (response.status_code, response.text[:300])
    # The test servers run without rate limits: a 429 here would mean the routes went untested.
    assert response.status_code != 429, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json", response.headers
    assert "Traceback" not in response.text


ROUTES: dict[str, Callable[[httpx.Client, dict[str, Any]], httpx.Response]] = {
    "read": lambda c, r: c.get(f"/api/sessions/{r['path_id']}", headers=r["headers"], params=r["params"]),
    "create": lambda c, r: c.post(
        "/api/sessions", headers=r["headers"], params=r["params"], content=r["content"]
    ),
    "accept terms": lambda c, r: c.post(
        "/api/terms/accept", headers=r["headers"], params=r["params"], content=r["content"]
    ),
    "logout": lambda c, r: c.get("/api/sessions/logout", headers=r["headers"], params=r["params"]),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_hostile_http_requests_never_get_a_500_or_a_success(
    client: httpx.Client, known: Known, route: str
) -> None:
    send = ROUTES[route]

    @HTTP
    @given(hostile_requests(known))
    def check(request: dict[str, Any]) -> None:
        _check(send(client, request))

    check()
