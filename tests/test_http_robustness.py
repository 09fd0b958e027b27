"""Hostile bodies on every state-changing route: malformed, mistyped, oversized, deeply
nested, out-of-range and oddly encoded input always ends in a 4xx problem+json,
never a 5xx, whether the caller is signed in (with CSRF) or not. Plus the
problem+json shape of 404 and 405, and the health and metrics endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, register

COOKIE = "__Host-gatepass_session"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
MB = 1024 * 1024

MakeClient = Callable[..., TestClient]

ROUTES = ["register", "login", "logout", "logout-all", "password", "delete-session"]
#: Routes whose handler reads the body; the others only read form bodies (for csrf_token).
BODY_ROUTES = {"register", "login", "password"}


def deep(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + closer * levels


def fields(**values: str) -> bytes:
    """A JSON object whose values are given as raw JSON text (so escapes stay as written)."""
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}").encode()


def all_fields(value: str) -> bytes:
    """Every field any route reads, each set to the raw JSON ``value``."""
    names = ("email", "password", "current_password", "new_password", "client")
    return fields(**dict.fromkeys(names, value))


def with_valid_others(**bad: str) -> bytes:
    """A register/login body that is valid except for the ``bad`` raw JSON values. It
    lacks the password route's fields, so that route refuses it as well."""
    good = {"email": '"ada@example.com"', "password": f'"{PASSWORD}"'}
    return fields(**(good | bad))


def password_change(**bad: str) -> bytes:
    """A password-change body that is valid except for the ``bad`` raw JSON values. It
    lacks an email, so register and login refuse it as well."""
    good = {"current_password": f'"{PASSWORD}"', "new_password": '"another good passphrase"'}
    return fields(**(good | bad))


#: (id, body, content type or None for no Content-Type header). Every one is refused
#: by every route that reads a body.
PAYLOADS: list[tuple[str, bytes, str | None]] = [
    ("invalid-json", b'{"email": "ada@example.com", ', JSON),
    ("trailing-garbage", b"{} x", JSON),
    ("single-quotes", b"{'email': 'ada@example.com'}", JSON),
    ("bare-word", b"email=ada", JSON),
    ("nan", all_fields("NaN"), JSON),
    ("infinity", all_fields("-Infinity"), JSON),
    ("empty-array", b"[]", JSON),
    ("array-of-object", b'[{"email": "ada@example.com", "password": "x"}]', JSON),
    ("string", b'"ada@example.com"', JSON),
    ("number", b"42", JSON),
    ("true", b"true", JSON),
    ("null", b"null", JSON),
    ("empty-object", b"{}", JSON),
    ("numbers", all_fields("12345678"), JSON),
    ("floats", all_fields("1.5e3"), JSON),
    ("nulls", all_fields("null"), JSON),
    ("booleans", all_fields("false"), JSON),
    ("nested-objects", all_fields('{"$ne": null}'), JSON),
    ("arrays", all_fields('["ada@example.com"]'), JSON),
    ("email-number", with_valid_others(email="0"), JSON),
    ("password-null", password_change(password="null", new_password="null"), JSON),
    ("current-password-number", password_change(current_password="12345678"), JSON),
    ("new-password-object", password_change(new_password='{"a": "b"}'), JSON),
    ("email-object", with_valid_others(email='{"email": "ada@example.com"}'), JSON),
    ("empty-body", b"", JSON),
    ("empty-body-no-type", b"", None),
    ("whitespace-body", b" \n\t ", JSON),
    ("one-mb-string", b'{"email": "' + b"a" * MB + b'"}', JSON),
    ("one-mb-garbage", b"\x00" * MB, JSON),
    ("deep-arrays-100000", deep(100_000), JSON),
    ("deep-objects-100000", deep(100_000, b'{"a":', b"}"), JSON),
    ("deep-arrays-under-size-limit", deep(30_000), JSON),
    ("deep-objects-under-size-limit", deep(10_000, b'{"a":', b"}"), JSON),
    ("deep-in-field", b'{"email": ' + deep(30_000) + b"}", JSON),
    ("huge-exponent", all_fields("1e999999"), JSON),
    ("huge-negative-exponent", all_fields("-1e999999"), JSON),
    ("tiny-exponent", all_fields("1e-999999"), JSON),
    ("integer-10000-digits", all_fields("9" * 10_000), JSON),
    ("integer-4000-digits", all_fields("9" * 4_000), JSON),
    ("float-10000-digits", all_fields("0." + "1" * 10_000), JSON),
    ("invalid-utf8", b'{"email": "\xff\xfe", "password": "\xc3\x28abcdefgh"}', JSON),
    ("overlong-utf8", b'{"email": "\xc0\xafada@example.com"}', JSON),
    ("truncated-utf8", b'{"email": "ada@example.com\xe2\x80"}', JSON),
    ("utf8-bom", b'\xef\xbb\xbf{"email": "ada@example.com"}', JSON),
    ("utf16", '{"email": "ada@example.com"}'.encode("utf-16"), JSON),
    (
        "lone-high-surrogate",
        all_fields(r'"\ud800\ud800\ud800\ud800\ud800\ud800\ud800\ud800"'),
        JSON,
    ),
    ("lone-low-surrogate", with_valid_others(email=r'"ada\udc00@example.com"'), JSON),
    (
        "surrogate-passwords",
        password_change(
            password=r'"abc\ud800defghij"',
            current_password=r'"abc\udfffdefghij"',
            new_password=r'"abc\ud800defghij"',
        ),
        JSON,
    ),
    ("surrogate-key", b'{"\\ud800": 1}', JSON),
    ("nul-escaped-email", with_valid_others(email=r'"ada\u0000@example.com"'), JSON),
    ("nul-raw-byte", b'{"email": "ada\x00@example.com"}', JSON),
    ("bidi-email", with_valid_others(email=r'"ada\u202e@example.com"'), JSON),
    ("bidi-raw-email", with_valid_others(email='"ada\u202e\u2066@example.com"'), JSON),
    ("zero-width-email", with_valid_others(email=r'"a\u200bda@example.com"'), JSON),
    ("control-chars", all_fields(r'"\u0001\u0002\u001b[31m"'), JSON),
    ("client-unknown", with_valid_others(client='"desktop"'), JSON),
    ("short-passwords", password_change(password='"short"', new_password='"short"'), JSON),
    ("long-new-password", password_change(new_password='"' + "x" * 1025 + '"'), JSON),
    ("text-plain", password_change(), "text/plain"),
    ("no-content-type", password_change(), None),
    ("xml", b"<email>ada@example.com</email>", "application/xml"),
    ("multipart", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
    ("form-invalid-utf8", b"email=\xff\xfe&password=\xc3\x28", FORM),
    ("form-too-many-fields", "&".join(f"f{i}=1" for i in range(1000)).encode(), FORM),
    ("form-garbage", b"%%%&&&===%zz", FORM),
    ("form-one-mb", b"email=" + b"a" * MB, FORM),
]

PAYLOAD_IDS = [p[0] for p in PAYLOADS]


class Caller:
    """Sends a body to a route, as a stranger or as a signed-in user with CSRF."""

    def __init__(
        self, client: TestClient, authenticated: bool, *, register_user: bool = True
    ) -> None:
        self.client = client
        self.authenticated = authenticated
        if register_user:
            register(client)
        self.cookie = ""
        self.csrf = ""
        if authenticated:
            self.sign_in()

    def sign_in(self) -> None:
        self.client.cookies.clear()
        response = self.client.post(
            "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        self.cookie = response.cookies[COOKIE]
        self.csrf = response.json()["csrf_token"]
        self.client.cookies.clear()

    def signed_in(self) -> bool:
        self.client.cookies.clear()
        status = self.client.get(
            "/auth/me", headers={"Cookie": f"{COOKIE}={self.cookie}"}
        ).status_code
        return status == 200

    def send(
        self,
        route: str,
        body: bytes | Iterator[bytes],
        content_type: str | None,
    ) -> httpx2.Response:
        headers = {"Origin": ORIGIN}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.authenticated:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
            headers["X-CSRF-Token"] = self.csrf
        if route == "delete-session":
            method, url = "DELETE", "/auth/sessions/not-a-handle"
        else:
            method, url = "POST", f"/auth/{route}"
        self.client.cookies.clear()
        response = self.client.request(method, url, content=body, headers=headers)
        self.client.cookies.clear()
        if self.authenticated and not self.signed_in():
            self.sign_in()  # logout and logout-all ignore JSON bodies and succeed
        return response


def is_login_form(route: str, content_type: str | None) -> bool:
    """The sign-in page posts a form to /auth/login and gets its errors as that page."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return route == "login" and media == FORM


def problem_issues(response: httpx2.Response, *, html_page: bool = False) -> list[str]:
    """What is wrong with an error response (empty when it is a proper problem+json, or
    with ``html_page`` the re-rendered sign-in page)."""
    if response.status_code >= 500:
        return [f"server error {response.status_code}"]
    if response.status_code < 400:
        return []
    if html_page:
        if not response.headers.get("content-type", "").startswith("text/html"):
            return [f"{response.status_code} form error is not the HTML page"]
        return []
    if response.headers.get("content-type") != PROBLEM:
        return [f"{response.status_code} with content-type {response.headers.get('content-type')}"]
    try:
        body = response.json()
    except ValueError:
        return [f"{response.status_code} body is not JSON"]
    issues = []
    if not isinstance(body, dict) or not {"type", "title", "status", "detail"} <= set(body):
        issues.append(f"{response.status_code} body lacks problem fields: {body!r}")
    elif body["status"] != response.status_code:
        issues.append(f"status field {body['status']} != {response.status_code}")
    return issues


def is_json_object(body: bytes, content_type: str | None) -> bool:
    """Whether the server should accept ``body`` as a JSON object (strict UTF-8, no NaN)."""
    if content_type is None or not content_type.split(";")[0].strip().endswith("json"):
        return False
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict)


def _refuse(name: str) -> None:
    raise ValueError(name)


def expected_issues(
    route: str,
    authenticated: bool,
    body: bytes,
    content_type: str | None,
    response: httpx2.Response,
) -> list[str]:
    issues = problem_issues(response, html_page=is_login_form(route, content_type))
    status = response.status_code
    if not authenticated and route not in ("register", "login"):
        expected = "401"
        fine = status == 401
    elif route in BODY_ROUTES or route == "delete-session":
        # delete-session targets "not-a-handle", nobody's session: 404 at best.
        expected = "4xx"
        fine = 400 <= status < 500
    else:
        # logout and logout-all need no body: they act on an empty one, a well-formed
        # form (which may carry csrf_token) or a JSON object; anything else is refused.
        expected = "4xx or 204"
        fine = 400 <= status < 500 or (
            status == 204
            and (not body or content_type == FORM or is_json_object(body, content_type))
        )
    if not fine:
        issues.append(f"expected {expected}, got {status}")
    return issues


@pytest.fixture
def make_caller(make_client: MakeClient) -> Callable[[bool], Caller]:
    """One caller per test and kind; hypothesis examples of a test share it."""
    made: dict[bool, Caller] = {}

    def make(authenticated: bool) -> Caller:
        if authenticated not in made:
            client = make_client(login_ip_limit="1000000", login_max_failures="1000000")
            made[authenticated] = Caller(client, authenticated)
        return made[authenticated]

    return make


@pytest.mark.parametrize("authenticated", [False, True], ids=["stranger", "signed-in"])
@pytest.mark.parametrize("route", ROUTES)
def test_hostile_bodies_get_4xx_problem_never_5xx(
    make_caller: Callable[[bool], Caller], route: str, authenticated: bool
) -> None:
    caller = make_caller(authenticated)
    failures: dict[str, list[str]] = {}
    for name, body, content_type in PAYLOADS:
        response = caller.send(route, body, content_type)
        issues = expected_issues(route, authenticated, body, content_type, response)
        if issues:
            failures[name] = issues
    assert failures == {}


@pytest.mark.parametrize("route", ["register", "login", "password"])
def test_hostile_bodies_on_body_routes_change_nothing(
    make_caller: Callable[[bool], Caller], route: str
) -> None:
    caller = make_caller(True)
    original = caller.cookie
    for _, body, content_type in PAYLOADS:
        response = caller.send(route, body, content_type)
        assert 400 <= response.status_code < 500
        assert COOKIE not in response.cookies
    assert caller.cookie == original, "the session was never lost and re-made"
    assert caller.signed_in()
    caller.client.cookies.clear()
    ok = caller.client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert ok.status_code == 200, "the password is unchanged"


@pytest.mark.parametrize("route", ["logout", "logout-all", "delete-own-other-session"])
def test_signed_in_bodyless_routes_refuse_malformed_json_and_change_nothing(
    make_client: MakeClient, route: str
) -> None:
    client = make_client()
    bystander = Caller(client, True)
    caller = Caller(client, True, register_user=False)
    if route == "delete-own-other-session":
        rows = client.get("/auth/sessions", headers={"Cookie": f"{COOKIE}={caller.cookie}"})
        handle = next(r["id"] for r in rows.json() if not r["current"])
        method, url = "DELETE", f"/auth/sessions/{handle}"
    else:
        method, url = "POST", f"/auth/{route}"
    client.cookies.clear()
    response = client.request(
        method,
        url,
        content=b'{"oops": ',
        headers={
            "Content-Type": JSON,
            "Cookie": f"{COOKIE}={caller.cookie}",
            "X-CSRF-Token": caller.csrf,
            "Origin": ORIGIN,
        },
    )
    client.cookies.clear()
    assert response.status_code == 400
    assert problem_issues(response) == []
    assert caller.signed_in()
    assert bystander.signed_in()


@pytest.mark.parametrize("route", ["register", "login", "password"])
def test_chunked_one_mb_body_without_content_length_is_413(
    make_caller: Callable[[bool], Caller], route: str
) -> None:
    caller = make_caller(True)
    chunks = iter([b'{"email": "' + b"a" * (64 * 1024)] + [b"a" * (64 * 1024)] * 16)
    response = caller.send(route, chunks, JSON)
    assert response.status_code == 413
    assert problem_issues(response) == []


@pytest.mark.parametrize(
    "route",
    ["register", "login", "password"],
)
def test_oversized_body_is_413_problem(make_caller: Callable[[bool], Caller], route: str) -> None:
    caller = make_caller(True)
    response = caller.send(route, b'{"email": "' + b"a" * MB + b'"}', JSON)
    assert response.status_code == 413
    assert problem_issues(response) == []


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("invalid-json", b"{"),
        ("invalid-utf8", b'{"email": "\xff"}'),
        ("integer-10000-digits", b'{"email": ' + b"9" * 10_000 + b"}"),
        ("deep-under-size-limit", deep(30_000)),
    ],
)
def test_unparseable_json_is_400_problem(
    make_caller: Callable[[bool], Caller], name: str, body: bytes
) -> None:
    caller = make_caller(False)
    response = caller.send("register", body, JSON)
    assert response.status_code == 400, name
    assert problem_issues(response) == []


@pytest.mark.parametrize("route", ["register", "login"])
def test_wrong_field_types_are_422_naming_fields(
    make_caller: Callable[[bool], Caller], route: str
) -> None:
    caller = make_caller(False)
    response = caller.send(route, fields(email="12", password="null"), JSON)
    assert response.status_code == 422
    assert problem_issues(response) == []
    named = {error["field"] for error in response.json()["errors"]}
    assert named == {"email", "password"}


@pytest.mark.parametrize(
    "password",
    [
        "\x00\x00\x00\x00\x00\x00\x00\x00",
        "\u202eabcdefgh\u202c",
        "pass\u2066word\u2069!",
        # Mathematical Fraktur "hexagonal" (Fraktur "password" is on the common list).
        "\U0001d525\U0001d522\U0001d535\U0001d51e\U0001d524\U0001d52c\U0001d52b\U0001d51e\U0001d529",
    ],
    ids=["nul", "bidi-override", "bidi-isolate", "math-letters"],
)
def test_odd_but_valid_unicode_password_round_trips(client: TestClient, password: str) -> None:
    response = client.post(
        "/auth/register", json={"email": "odd@example.com", "password": password}
    )
    assert response.status_code == 201
    client.cookies.clear()
    response = client.post("/auth/login", json={"email": "odd@example.com", "password": password})
    assert response.status_code == 200
    client.cookies.clear()


# --- property tests -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["email", "password", "current_password", "new_password", "client", "csrf_token"]
)
shaped_bodies = st.dictionaries(field_names, json_values, max_size=5) | json_values
content_types = st.sampled_from(
    [JSON, FORM, "text/plain", "application/problem+json", "application/json; charset=latin-1"]
)
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("authenticated", [False, True], ids=["stranger", "signed-in"])
@pytest.mark.parametrize("route", ROUTES)
@PROPERTY_SETTINGS
@given(body=shaped_bodies)
def test_any_json_value_gets_a_clean_answer(
    make_caller: Callable[[bool], Caller], route: str, authenticated: bool, body: Any
) -> None:
    caller = make_caller(authenticated)
    raw = json.dumps(body, ensure_ascii=True).encode()
    response = caller.send(route, raw, JSON)
    assert problem_issues(response) == []


@pytest.mark.parametrize("authenticated", [False, True], ids=["stranger", "signed-in"])
@pytest.mark.parametrize("route", ROUTES)
@PROPERTY_SETTINGS
@given(body=st.binary(max_size=512), content_type=content_types)
def test_any_bytes_get_a_clean_answer(
    make_caller: Callable[[bool], Caller],
    route: str,
    authenticated: bool,
    body: bytes,
    content_type: str,
) -> None:
    caller = make_caller(authenticated)
    response = caller.send(route, body, content_type)
    assert problem_issues(response, html_page=is_login_form(route, content_type)) == []


# --- other errors and operational endpoints -------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/nope"),
        ("POST", "/auth/refresh-like-nothing"),
        ("GET", "/auth/sessions/a/b"),
        ("DELETE", "/auth"),
        ("GET", "/static/missing.css"),
    ],
)
def test_unknown_path_is_404_problem(client: TestClient, method: str, url: str) -> None:
    response = client.request(method, url)
    assert response.status_code == 404
    assert problem_issues(response) == []


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/auth/login"),
        ("PUT", "/auth/register"),
        ("DELETE", "/auth/me"),
        ("POST", "/auth/sessions"),
        ("PATCH", "/auth/password"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
        ("POST", "/login"),
    ],
)
def test_wrong_method_is_405_problem_with_allow(client: TestClient, method: str, url: str) -> None:
    response = client.request(method, url)
    assert response.status_code == 405
    assert problem_issues(response) == []
    assert response.headers.get("allow")


def test_healthz_is_200(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    register(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "gatepass_logins",
        "gatepass_lockouts",
        "gatepass_sessions_created",
        "gatepass_sessions_ended",
    } <= names


def test_every_error_carries_nosniff(client: TestClient) -> None:
    response = client.post("/auth/register", content=b"{", headers={"Content-Type": JSON})
    assert response.status_code == 400
    assert response.headers["x-content-type-options"] == "nosniff"


def test_pages_cannot_be_framed_and_carry_a_strict_csp(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "same-origin"
