"""The stand-in's account, users, courses and keys: a small TOML file, or the built-in default.

``commons-session dev-canvas --print-config`` prints the default, to copy and edit. Every value
in it is public: it is a test and demo Canvas, and must never be registered with a server that
real people use.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_CONFIG", "ConfigError", "Course", "DevCanvasConfig", "User", "load_config"]

DEFAULT_CONFIG = """\
# commons-session dev-canvas: a Canvas STAND-IN for development and tests, not Canvas.
# Every value below is public. Never register this Canvas with a server real people use.

# The tool (commons-session serve) as a browser reaches it.
tool_url = "http://127.0.0.1:8000"

[account]
id = "1"
name = "Example University"
guid = "7db438071375c02373713c12c73869ff2f470b68:canvas-lms"
contact_email = "notifications@example.edu"

[lti11]
consumer_key = "dev-canvas"
shared_secret = "dev-canvas-shared-secret"
# launch_url = "<tool_url>/api/lti"        (also the tool_launch_url of jwt_token)

[lti13]
client_id = "10000000000001"
deployment_id = "1:8865aa05b4b79b64a91a86042e43af5ea8ae79eb"
# issuer = "<this stand-in's URL>"
# login_url = "<tool_url>/api/lti/login"
# target_link_uri = "<tool_url>/api/lti/launch"
# redirect_uris = ["<tool_url>/api/lti/launch"]

[[users]]
id = "1"
name = "Ada Lovelace"
given_name = "Ada"
family_name = "Lovelace"
email = "ada@example.edu"
login_id = "ada"
lti_user_id = "535fa085f22b4655f48cd5a36a9215f64c062838"   # LTI 1.1 user_id
lti_id = "a4d8f7b2-5c1e-4f0a-9d3b-2e6c8a1f7b90"           # LTI 1.3 sub
token = "dev-canvas-token-ada"                            # Canvas API access token

[[users]]
id = "2"
name = "Grace Hopper"
given_name = "Grace"
family_name = "Hopper"
email = "grace@example.edu"
login_id = "grace"
lti_user_id = "86157096483e6b3f812c0d2ae1ff57d1bbcdd2a5"
lti_id = "3f0b9c2d-7e41-4b8a-a6d5-91c3e2f4b867"
token = "dev-canvas-token-grace"

[[users]]                           # the account admin: Admin > Developer Keys (LTI Registration)
id = "3"
name = "Alan Turing"
given_name = "Alan"
family_name = "Turing"
email = "alan@example.edu"
login_id = "alan"
lti_user_id = "0f3c2b9a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
lti_id = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
token = "dev-canvas-token-alan"
admin = true

[[courses]]
id = "1"
name = "Biology 101"
course_code = "BIO101"
context_id = "4dde05e8ca1973bcca9bffc13e1548820eee93a3"
teachers = ["1"]
students = ["2"]
"""


class ConfigError(ValueError):
    """The configuration file is unreadable or inconsistent; the message says where."""


@dataclass(frozen=True)
class User:
    id: str  #: Canvas user id (``custom_canvas_user_id``)
    name: str
    given_name: str
    family_name: str
    email: str
    login_id: str
    lti_user_id: str  #: LTI 1.1 ``user_id``, and ``lti11_legacy_user_id`` in LTI 1.3
    lti_id: str  #: LTI 1.3 ``sub``
    token: str  #: Canvas API access token
    admin: bool = False  #: account admin


@dataclass(frozen=True)
class Course:
    id: str
    name: str
    course_code: str
    context_id: str  #: LTI ``context_id`` (Canvas' opaque id of the course)
    teachers: tuple[str, ...]
    students: tuple[str, ...]

    def role_of(self, user_id: str) -> str | None:
        if user_id in self.teachers:
            return "teacher"
        if user_id in self.students:
            return "student"
        return None


@dataclass(frozen=True)
class DevCanvasConfig:
    canvas_url: str  #: this stand-in as a browser reaches it
    tool_url: str
    account_id: str
    account_name: str
    guid: str
    contact_email: str
    consumer_key: str
    shared_secret: str
    launch_url: str
    client_id: str
    deployment_id: str
    issuer: str
    login_url: str
    target_link_uri: str
    redirect_uris: tuple[str, ...]
    users: tuple[User, ...]
    courses: tuple[Course, ...]
    source: str  #: the file it came from, or "built-in default"
    text: str = field(repr=False)  #: the TOML it was parsed from (handed to the server's worker)

    @property
    def api_domain(self) -> str:
        """What Canvas sends as ``custom_canvas_api_domain``: its host (and port)."""
        return urlsplit(self.canvas_url).netloc

    @property
    def jwks_url(self) -> str:
        return self.canvas_url + "/api/lti/security/jwks"

    @property
    def auth_url(self) -> str:
        return self.canvas_url + "/api/lti/authorize_redirect"

    def user(self, user_id: str) -> User | None:
        return next((u for u in self.users if u.id == user_id), None)

    def user_by_token(self, token: str) -> User | None:
        return next((u for u in self.users if u.token == token), None)

    def course(self, course_id: str) -> Course | None:
        return next((c for c in self.courses if c.id == course_id), None)

    def account_roles(self, user: User) -> str:
        """LTI 1.1 ``roles`` in the account context: institution roles by enrolment."""
        roles = []
        if user.admin:
            roles.append("urn:lti:instrole:ims/lis/Administrator")
        if any(user.id in c.teachers for c in self.courses):
            roles.append("urn:lti:instrole:ims/lis/Instructor")
        if any(user.id in c.students for c in self.courses):
            roles.append("urn:lti:instrole:ims/lis/Student")
        return ",".join([*roles, "urn:lti:sysrole:ims/lis/User"])


def _url(value: Any, where: str) -> str:
    text = _text(value, where)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"{where} must be an http(s) URL, got {text!r}")
    return text


def _base(value: Any, where: str) -> str:
    """A base URL, to which paths are appended: without its trailing slash."""
    return _url(value, where).rstrip("/")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _table(data: dict[str, Any], name: str, known: set[str], where: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}{name} must be a table")
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}{name} has unknown key(s): {', '.join(unknown)}")
    return table


def _user(raw: Any, index: int) -> User:
    where = f"users[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    fields = set(User.__dataclass_fields__)
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}")
    missing = sorted(fields - set(raw) - {"admin"})
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}")
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        raise ConfigError(f"{where}.admin must be true or false")
    values = {name: _text(raw[name], f"{where}.{name}") for name in fields - {"admin"}}
    return User(**values, admin=admin)


def _course(raw: Any, index: int, user_ids: set[str]) -> Course:
    where = f"courses[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    fields = set(Course.__dataclass_fields__)
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}")
    people: dict[str, tuple[str, ...]] = {}
    for role in ("teachers", "students"):
        ids = raw.get(role, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ConfigError(f"{where}.{role} must be a list of user ids (strings)")
        strangers = sorted(set(ids) - user_ids)
        if strangers:
            raise ConfigError(f"{where}.{role} names unknown user(s): {', '.join(strangers)}")
        people[role] = tuple(ids)
    return Course(
        id=_text(raw.get("id"), f"{where}.id"),
        name=_text(raw.get("name"), f"{where}.name"),
        course_code=_text(raw.get("course_code"), f"{where}.course_code"),
        context_id=_text(raw.get("context_id"), f"{where}.context_id"),
        teachers=people["teachers"],
        students=people["students"],
    )


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"two entries share the {what} {value!r}")
        seen.add(value)


def parse_config(text: str, *, canvas_url: str, tool_url: str | None = None, source: str) -> DevCanvasConfig:
    """``tool_url`` (from the command line) wins over the file's."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"tool_url", "account", "lti11", "lti13", "users", "courses"})
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(unknown)}")
    canvas = _base(canvas_url, "the stand-in's URL")
    tool = _base(tool_url or data.get("tool_url", "http://127.0.0.1:8000"), "tool_url")
    account = _table(data, "account", {"id", "name", "guid", "contact_email"}, "")
    lti11 = _table(data, "lti11", {"consumer_key", "shared_secret", "launch_url"}, "")
    lti13 = _table(
        data,
        "lti13",
        {"client_id", "deployment_id", "issuer", "login_url", "target_link_uri", "redirect_uris"},
        "",
    )
    raw_users = data.get("users", [])
    if not isinstance(raw_users, list) or not raw_users:
        raise ConfigError("users must be a non-empty array of tables ([[users]])")
    users = tuple(_user(raw, i) for i, raw in enumerate(raw_users))
    for attribute in ("id", "token", "lti_user_id", "lti_id"):
        _unique([getattr(u, attribute) for u in users], f"user {attribute}")
    raw_courses = data.get("courses", [])
    if not isinstance(raw_courses, list) or not raw_courses:
        raise ConfigError("courses must be a non-empty array of tables ([[courses]])")
    courses = tuple(_course(raw, i, {u.id for u in users}) for i, raw in enumerate(raw_courses))
    _unique([c.id for c in courses], "course id")
    redirect_uris = lti13.get("redirect_uris", [tool + "/api/lti/launch"])
    if not isinstance(redirect_uris, list) or not redirect_uris:
        raise ConfigError("lti13.redirect_uris must be a non-empty list of URLs")
    consumer_key = _text(lti11.get("consumer_key", "dev-canvas"), "lti11.consumer_key")
    if not consumer_key.isascii() or not consumer_key.isprintable() or " " in consumer_key:
        raise ConfigError("lti11.consumer_key must be printable ASCII without spaces")
    return DevCanvasConfig(
        canvas_url=canvas,
        tool_url=tool,
        account_id=_text(account.get("id", "1"), "account.id"),
        account_name=_text(account.get("name", "Example University"), "account.name"),
        guid=_text(account.get("guid", "dev-canvas:canvas-lms"), "account.guid"),
        contact_email=_text(
            account.get("contact_email", "notifications@example.edu"), "account.contact_email"
        ),
        consumer_key=consumer_key,
        shared_secret=_text(lti11.get("shared_secret"), "lti11.shared_secret"),
        launch_url=_url(lti11.get("launch_url", tool + "/api/lti"), "lti11.launch_url"),
        client_id=_text(lti13.get("client_id", "10000000000001"), "lti13.client_id"),
        deployment_id=_text(lti13.get("deployment_id", "1:dev-canvas"), "lti13.deployment_id"),
        issuer=_url(lti13.get("issuer", canvas), "lti13.issuer"),
        login_url=_url(lti13.get("login_url", tool + "/api/lti/login"), "lti13.login_url"),
        target_link_uri=_url(lti13.get("target_link_uri", tool + "/api/lti/launch"), "lti13.target_link_uri"),
        redirect_uris=tuple(_url(u, "lti13.redirect_uris[]") for u in redirect_uris),
        users=users,
        courses=courses,
        source=source,
        text=text,
    )


def load_config(path: Path | None, *, canvas_url: str, tool_url: str | None = None) -> DevCanvasConfig:
    if path is None:
        return parse_config(
            DEFAULT_CONFIG, canvas_url=canvas_url, tool_url=tool_url, source="built-in default"
        )
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text, canvas_url=canvas_url, tool_url=tool_url, source=str(path))
