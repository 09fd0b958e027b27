"""Unit tests of gatepass.web (own origins from configuration, strict cookie reading,
/metrics access) and of the settings it reads: GATEPASS_PUBLIC_URL and
GATEPASS_METRICS_TOKEN."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gatepass.config import Settings, load_settings
from gatepass.errors import (
    AuthenticationFailed,
    ConfigError,
    CSRFFailed,
    GatepassError,
    InvalidToken,
    KeysUnavailable,
    Overloaded,
    PermissionDenied,
    RateLimited,
    StoreUnavailable,
)
from gatepass.web import (
    AmbiguousCookie,
    check_metrics_access,
    client_ip,
    cookie_value,
    cookie_values,
    enforce_csrf,
    is_loopback_address,
    join_cookie_headers,
    own_origins,
    problem_for,
    request_credentials,
    session_cookie,
    trusted_origins,
    wildcard_bind_warning,
)

METRICS_TOKEN = "metrics-token-0123456789abcdef"
LOOPBACK_8000 = {"http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"}


def settings(tmp_path: Path, **env: str) -> Settings:
    """Settings from exactly ``env`` (no test default for the public URL)."""
    environ = {f"GATEPASS_{k.upper()}": v for k, v in env.items()}
    return load_settings(environ, data_dir=tmp_path / ".gatepass")


# GATEPASS_PUBLIC_URL -------------------------------------------------------------------


def test_public_url_defaults_to_the_issuer_then_to_host_and_port(tmp_path: Path) -> None:
    assert settings(tmp_path).public_url is None
    assert settings(tmp_path).effective_public_url == "http://127.0.0.1:8000"
    assert settings(tmp_path, host="10.1.2.3", port="9000").effective_public_url == (
        "http://10.1.2.3:9000"
    )
    issued = settings(tmp_path, issuer="https://auth.example/")
    assert issued.effective_public_url == "https://auth.example"


def test_public_url_wins_over_the_issuer(tmp_path: Path) -> None:
    both = settings(tmp_path, issuer="https://auth.example", public_url="https://login.example")
    assert both.effective_public_url == "https://login.example"


def test_non_url_issuer_leaves_host_and_port_as_public_url(tmp_path: Path) -> None:
    assert settings(tmp_path, issuer="urn:gatepass").effective_public_url == (
        "http://127.0.0.1:8000"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTPS://Auth.Example:443/", "https://auth.example"),
        ("https://auth.example/gate/", "https://auth.example/gate"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
    ],
)
def test_public_url_is_normalised(tmp_path: Path, raw: str, expected: str) -> None:
    assert settings(tmp_path, public_url=raw).public_url == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "auth.example",
        "ftp://auth.example",
        "https://",
        "https://user:pw@auth.example",
        "https://auth.example/?next=x",
        "https://auth.example/#top",
        "https://auth.example/a b",
        "https://auth.example:99999",
    ],
)
def test_bad_public_url_is_a_one_line_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, public_url=value)
    assert info.value.setting == "GATEPASS_PUBLIC_URL"
    assert "\n" not in str(info.value)


def test_ipv6_wildcard_host_gives_a_bracketed_default_url(tmp_path: Path) -> None:
    wildcard = settings(tmp_path, host="::", port="9000")
    assert wildcard.effective_issuer == "http://[::]:9000"
    assert wildcard.effective_public_url == "http://[::]:9000"


# own origins ---------------------------------------------------------------------------


def test_default_own_origins_are_the_loopback_spellings_of_host_and_port(tmp_path: Path) -> None:
    assert own_origins(settings(tmp_path)) == LOOPBACK_8000


@pytest.mark.parametrize(
    "public_url", ["http://localhost:8000", "http://127.0.0.1:8000/", "http://[::1]:8000"]
)
def test_any_loopback_public_url_trusts_every_loopback_spelling(
    tmp_path: Path, public_url: str
) -> None:
    assert own_origins(settings(tmp_path, public_url=public_url)) >= LOOPBACK_8000


def test_loopback_spellings_keep_scheme_and_port(tmp_path: Path) -> None:
    origins = own_origins(settings(tmp_path, public_url="https://localhost"))
    assert "https://127.0.0.1" in origins
    assert "https://[::1]" in origins
    assert not any(o.startswith("http://") for o in origins)
    assert not any(":8000" in o or ":443" in o for o in origins)


def test_public_host_does_not_trust_loopback_spellings(tmp_path: Path) -> None:
    configured = settings(
        tmp_path, public_url="https://auth.example", issuer="https://auth.example"
    )
    assert own_origins(configured) == {"https://auth.example"}


def test_issuer_origin_and_allowed_origins_are_trusted_too(tmp_path: Path) -> None:
    configured = settings(
        tmp_path,
        public_url="https://login.example/base",
        issuer="https://auth.example/realm",
        allowed_origins="https://app.example",
    )
    assert own_origins(configured) == {"https://login.example", "https://auth.example"}
    assert trusted_origins(configured) == {
        "https://login.example",
        "https://auth.example",
        "https://app.example",
    }


# wildcard bind warning -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_bind_without_public_url_or_issuer_warns_naming_both(
    tmp_path: Path, host: str
) -> None:
    warning = wildcard_bind_warning(settings(tmp_path, host=host))
    assert warning is not None
    assert "GATEPASS_PUBLIC_URL" in warning
    assert "GATEPASS_ISSUER" in warning


@pytest.mark.parametrize(
    "env",
    [
        {"host": "0.0.0.0", "public_url": "https://auth.example"},
        {"host": "0.0.0.0", "issuer": "https://auth.example"},
        {"host": "127.0.0.1"},
        {"host": "10.0.0.5"},
    ],
)
def test_no_wildcard_warning_when_the_own_origin_is_known(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert wildcard_bind_warning(settings(tmp_path, **env)) is None


# cookies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("other=1", None),
        ("sid=abc", "abc"),
        ("a=1; sid=abc; b=2", "abc"),
        ("  sid = abc  ", "abc"),
        ("xsid=1; sidx=2; sid=abc", "abc"),
        ("sid=a=b", "a=b"),
        ("sid", None),  # a name without '=' is no cookie of that name
    ],
)
def test_single_cookie_value_is_read(header: str | None, expected: str | None) -> None:
    assert cookie_value(header, "sid") == expected


@pytest.mark.parametrize(
    "header",
    [
        "sid=victim; sid=attacker",
        "sid=attacker; sid=victim",
        "sid=same; sid=same",
        "sid=; sid=victim",
        "a=1; sid=victim; b=2; sid=attacker",
    ],
)
def test_tossed_second_cookie_value_is_ambiguous(header: str) -> None:
    with pytest.raises(AmbiguousCookie):
        cookie_value(header, "sid")
    assert len(cookie_values(header, "sid")) == 2


def test_cookie_names_are_case_sensitive() -> None:
    assert cookie_value("SID=x; sid=y", "sid") == "y"


# /metrics access -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "::ffff:7f00:2"]
)
def test_loopback_addresses(address: str) -> None:
    assert is_loopback_address(address)


@pytest.mark.parametrize(
    "address",
    [
        None,
        "",
        "testclient",
        "localhost",
        "10.0.0.1",
        "0.0.0.0",
        "::",
        "::ffff:10.0.0.1",
        "fe80::1",
    ],
)
def test_non_loopback_or_non_ip_peers(address: str | None) -> None:
    assert not is_loopback_address(address)


def test_metrics_without_token_refuse_a_remote_client(tmp_path: Path) -> None:
    configured = settings(tmp_path)
    check_metrics_access(configured, None, "127.0.0.1")
    with pytest.raises(PermissionDenied):
        check_metrics_access(configured, None, "203.0.113.9")
    with pytest.raises(PermissionDenied):
        check_metrics_access(configured, None, None)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {METRICS_TOKEN}",
        f"Bearer {METRICS_TOKEN[:-1]}",
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN.upper()}",
        METRICS_TOKEN,
    ],
)
def test_metrics_token_must_be_presented_exactly(tmp_path: Path, authorization: str | None) -> None:
    configured = settings(tmp_path, metrics_token=METRICS_TOKEN)
    with pytest.raises(AuthenticationFailed) as info:
        check_metrics_access(configured, authorization, "127.0.0.1")  # loopback is not enough
    assert METRICS_TOKEN not in str(info.value)


def test_right_metrics_token_passes_from_anywhere(tmp_path: Path) -> None:
    configured = settings(tmp_path, metrics_token=METRICS_TOKEN)
    check_metrics_access(configured, f"Bearer {METRICS_TOKEN}", "203.0.113.9")
    check_metrics_access(configured, f"bearer  {METRICS_TOKEN} ", None)


def test_metrics_token_is_kept_out_of_repr_and_dumps(tmp_path: Path) -> None:
    configured = settings(tmp_path, metrics_token=METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(configured)
    assert METRICS_TOKEN not in str(configured)
    assert METRICS_TOKEN not in repr(configured.metrics_token)
    assert METRICS_TOKEN not in configured.model_dump_json()


@pytest.mark.parametrize("value", ["short", "x" * 15, "has space in it 0123456", "tok\nen" * 4])
def test_weak_or_unsendable_metrics_token_is_a_config_error_that_hides_it(
    tmp_path: Path, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        settings(tmp_path, metrics_token=value)
    assert info.value.setting == "GATEPASS_METRICS_TOKEN"
    assert value not in str(info.value)
    assert value not in caplog.text


# the rules adapters share (plain request facts) ------------------------------------

TRUSTED = frozenset({"https://app.example"})
SESSION_TOKEN = "session-csrf-token"


def test_a_bearer_request_is_judged_on_its_header_and_its_cookie_is_not_read() -> None:
    header = "gatepass_session=a; gatepass_session=b"  # would be ambiguous if read
    assert request_credentials("Bearer t", header, "gatepass_session") == ("Bearer t", None)


def test_a_tossed_second_session_cookie_is_no_credential_at_all() -> None:
    with pytest.raises(AuthenticationFailed):
        request_credentials(None, "gatepass_session=a; gatepass_session=b", "gatepass_session")
    assert request_credentials(None, "gatepass_session=a", "gatepass_session") == (None, "a")


def test_a_cookie_in_a_second_cookie_line_counts_as_a_duplicate() -> None:
    joined = join_cookie_headers(["gatepass_session=a", "gatepass_session=b"])
    with pytest.raises(AuthenticationFailed):
        request_credentials(None, joined, "gatepass_session")


@pytest.mark.parametrize("method", ["POST", "put", "PATCH", "DELETE"])
def test_cookie_request_without_its_csrf_token_is_refused(method: str) -> None:
    for presented in (None, "", "another-token"):
        with pytest.raises(CSRFFailed):
            enforce_csrf(
                method,
                None,
                TRUSTED,
                session_csrf_token=SESSION_TOKEN,
                presented_token=presented,
            )
    enforce_csrf(
        method, None, TRUSTED, session_csrf_token=SESSION_TOKEN, presented_token=SESSION_TOKEN
    )


def test_foreign_origin_is_refused_even_for_bearer_and_anonymous_requests() -> None:
    with pytest.raises(CSRFFailed):
        enforce_csrf(
            "POST", "https://evil.example", TRUSTED, session_csrf_token=None, presented_token=None
        )
    with pytest.raises(CSRFFailed):
        enforce_csrf("POST", "null", TRUSTED, session_csrf_token=None, presented_token=None)
    enforce_csrf(
        "POST", "https://app.example", TRUSTED, session_csrf_token=None, presented_token=None
    )


def test_safe_methods_need_no_token_and_no_origin_check() -> None:
    for method in ("GET", "head", "OPTIONS"):
        enforce_csrf(
            method,
            "https://evil.example",
            TRUSTED,
            session_csrf_token=SESSION_TOKEN,
            presented_token=None,
        )


PROXY = load_settings({"GATEPASS_TRUSTED_PROXIES": "10.0.0.1"}).trusted_proxies


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.9", ["198.51.100.1"], PROXY) == "203.0.113.9"


def test_client_behind_a_trusted_proxy_is_the_right_most_untrusted_entry() -> None:
    # The client wrote the first entry itself; the proxy appended the real peer.
    assert client_ip("10.0.0.1", ["1.1.1.1, 198.51.100.7"], PROXY) == "198.51.100.7"
    assert client_ip("10.0.0.1", ["1.1.1.1", "198.51.100.7"], PROXY) == "198.51.100.7"


def test_garbage_in_forwarded_for_falls_back_to_the_peer() -> None:
    assert client_ip("10.0.0.1", ["not-an-ip"], PROXY) == "10.0.0.1"
    assert client_ip("10.0.0.1", [], PROXY) == "10.0.0.1"


def test_problem_for_a_sent_bad_token_names_invalid_token_in_the_challenge() -> None:
    answer = problem_for(InvalidToken("expired"))
    assert answer is not None
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "expired" not in str(answer.body)  # the reason is for logs only
    anonymous = problem_for(AuthenticationFailed())
    assert anonymous is not None
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"


def test_problem_for_store_outage_and_overload_is_503_with_retry_after() -> None:
    for exc in (StoreUnavailable("db down at 10.0.0.5"), KeysUnavailable("jwks"), Overloaded(3)):
        answer = problem_for(exc)
        assert answer is not None
        assert answer.status == 503
        assert int(answer.headers["Retry-After"]) >= 1
        assert "10.0.0.5" not in str(answer.body)


def test_problem_for_rate_limit_and_role_refusal() -> None:
    limited = problem_for(RateLimited(7))
    denied = problem_for(PermissionDenied("Missing role."))
    assert limited is not None
    assert denied is not None
    assert (limited.status, limited.headers["Retry-After"]) == (429, "7")
    assert denied.status == 403
    assert denied.body["title"] == "Forbidden"


def test_an_unexpected_error_gets_no_problem_document() -> None:
    assert problem_for(GatepassError("bug")) is None


def test_cookie_specs_follow_dev_mode(tmp_path: Path) -> None:
    secure = session_cookie(settings(tmp_path))
    dev = session_cookie(settings(tmp_path, dev="1"))
    assert (secure.name, secure.secure) == ("__Host-gatepass_session", True)
    assert (dev.name, dev.secure) == ("gatepass_session", False)
    assert (secure.path, secure.httponly, secure.samesite) == ("/", True, "lax")
