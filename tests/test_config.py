"""Unit tests of gatepass.config: DESIGN §4 defaults and start-up validation."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from gatepass.config import Settings, load_settings, normalise_origin
from gatepass.errors import ConfigError
from gatepass.sessions import SessionPolicy

SettingsFactory = Callable[..., Settings]

#: A value that looks like a real secret, used to check it never reaches an error message.
SECRET = "s3cr3t-value-that-must-never-be-echoed-0123456789"

#: Every setting of DESIGN §4, with a valid non-default value.
DESIGN_SETTINGS = {
    "GATEPASS_HOST": "0.0.0.0",
    "GATEPASS_PORT": "8080",
    "GATEPASS_DATABASE_URL": "sqlite+aiosqlite:///elsewhere.db",
    "GATEPASS_REDIS_URL": "redis://localhost:6379/0",
    "GATEPASS_DEV": "1",
    "GATEPASS_ISSUER": "https://auth.example",
    "GATEPASS_AUDIENCE": "my-api",
    "GATEPASS_JWT_ALGORITHM": "ES256",
    "GATEPASS_ACCESS_TOKEN_TTL": "60",
    "GATEPASS_REFRESH_TOKEN_TTL": "3600",
    "GATEPASS_SESSION_IDLE_TIMEOUT": "120",
    "GATEPASS_SESSION_ABSOLUTE_TIMEOUT": "7200",
    "GATEPASS_SESSION_SECRETS": SECRET,
    "GATEPASS_LEEWAY": "0",
    "GATEPASS_ALLOWED_ORIGINS": "https://app.example",
    "GATEPASS_LOGIN_MAX_FAILURES": "3",
    "GATEPASS_LOGIN_LOCKOUT": "60",
    "GATEPASS_LOGIN_IP_LIMIT": "10",
    "GATEPASS_TRUSTED_PROXIES": "10.0.0.1",
}

POSITIVE_INT_SETTINGS = [
    "access_token_ttl",
    "refresh_token_ttl",
    "session_idle_timeout",
    "session_absolute_timeout",
    "login_max_failures",
    "login_lockout",
    "login_ip_limit",
]


def config_error(make_settings: SettingsFactory, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make_settings(**env)
    return info.value


def assert_one_line_naming(error: ConfigError, variable: str) -> None:
    message = str(error)
    assert error.setting == variable
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


# defaults ------------------------------------------------------------------


def test_defaults_match_design_section_4(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.dev is False
    assert settings.effective_issuer == "http://127.0.0.1:8000"
    assert settings.audience == "gatepass"
    assert settings.jwt_algorithm == "EdDSA"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 2_592_000
    assert settings.session_idle_timeout == 1800
    assert settings.session_absolute_timeout == 86_400
    assert settings.session_secrets == ()
    assert settings.leeway == 10
    assert settings.allowed_origins == ()
    assert settings.login_max_failures == 5
    assert settings.login_lockout == 300
    assert settings.login_ip_limit == 50
    assert settings.trusted_proxies == ()


def test_default_database_is_sqlite_file_in_data_dir(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    assert settings.effective_database_url == (
        f"sqlite+aiosqlite:///{tmp_path / '.gatepass' / 'gatepass.db'}"
    )


def test_cookies_are_secure_unless_dev_mode(make_settings: SettingsFactory) -> None:
    assert make_settings().cookie_secure is True
    assert make_settings(dev="1").cookie_secure is False


def test_issuer_defaults_to_configured_host_and_port(make_settings: SettingsFactory) -> None:
    assert make_settings(host="10.1.2.3", port="9000").effective_issuer == "http://10.1.2.3:9000"


def test_every_design_setting_name_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(DESIGN_SETTINGS, data_dir=tmp_path)
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.database_url == "sqlite+aiosqlite:///elsewhere.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.dev is True
    assert settings.effective_issuer == "https://auth.example"
    assert settings.audience == "my-api"
    assert settings.jwt_algorithm == "ES256"
    assert settings.access_token_ttl == 60
    assert settings.refresh_token_ttl == 3600
    assert settings.session_idle_timeout == 120
    assert settings.session_absolute_timeout == 7200
    assert [s.get_secret_value() for s in settings.session_secrets] == [SECRET]
    assert settings.leeway == 0
    assert settings.allowed_origins == ("https://app.example",)
    assert settings.login_max_failures == 3
    assert settings.login_lockout == 60
    assert settings.login_ip_limit == 10
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.1"),)


def test_setting_names_are_case_insensitive(tmp_path: Path) -> None:
    settings = load_settings({"gatepass_access_token_ttl": "42"}, data_dir=tmp_path)
    assert settings.access_token_ttl == 42


def test_explicit_environ_is_not_mixed_with_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEPASS_ACCESS_TOKEN_TTL", "7")
    monkeypatch.setenv("GATEPASS_LEEWAY", "not-a-number")
    assert load_settings({}, data_dir=tmp_path).access_token_ttl == 900


def test_process_environment_is_read_when_no_mapping_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEPASS_ACCESS_TOKEN_TTL", "7")
    assert load_settings(data_dir=tmp_path).access_token_ttl == 7


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256", "HS256"])
def test_each_supported_jwt_algorithm_is_accepted(
    make_settings: SettingsFactory, algorithm: str
) -> None:
    assert make_settings(jwt_algorithm=algorithm).jwt_algorithm == algorithm


def test_settings_are_frozen(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.access_token_ttl = 1  # type: ignore[misc]


# positive integers ---------------------------------------------------------


@pytest.mark.parametrize("name", POSITIVE_INT_SETTINGS)
@pytest.mark.parametrize("value", ["1", "2", "59", "86401", str(10**12)])
def test_any_positive_integer_is_valid(
    make_settings: SettingsFactory, name: str, value: str
) -> None:
    assert getattr(make_settings(**{name: value}), name) == int(value)


@pytest.mark.parametrize("value", ["0", "1", "10", "3600"])
def test_leeway_may_be_zero_or_positive(make_settings: SettingsFactory, value: str) -> None:
    assert make_settings(leeway=value).leeway == int(value)


@pytest.mark.parametrize("name", POSITIVE_INT_SETTINGS)
@pytest.mark.parametrize("value", ["0", "-1", "-900", "abc", "", "1.5", "1e3", "15m", "0x10"])
def test_non_positive_or_non_numeric_values_are_config_errors(
    make_settings: SettingsFactory, name: str, value: str
) -> None:
    error = config_error(make_settings, **{name: value})
    assert_one_line_naming(error, f"GATEPASS_{name.upper()}")


@pytest.mark.parametrize("value", ["-1", "abc", "", "1.5"])
def test_negative_or_non_numeric_leeway_is_config_error(
    make_settings: SettingsFactory, value: str
) -> None:
    assert_one_line_naming(config_error(make_settings, leeway=value), "GATEPASS_LEEWAY")


@pytest.mark.parametrize("value", ["0", "65536", "http", "-80"])
def test_invalid_port_is_config_error(make_settings: SettingsFactory, value: str) -> None:
    assert_one_line_naming(config_error(make_settings, port=value), "GATEPASS_PORT")


def test_invalid_dev_flag_is_config_error(make_settings: SettingsFactory) -> None:
    assert_one_line_naming(config_error(make_settings, dev="maybe"), "GATEPASS_DEV")


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_issuer_is_config_error(make_settings: SettingsFactory, value: str) -> None:
    assert_one_line_naming(config_error(make_settings, issuer=value), "GATEPASS_ISSUER")


# unknown settings, algorithms ----------------------------------------------


@pytest.mark.parametrize(
    "variable",
    ["GATEPASS_SESSION_SECRET", "GATEPASS_ACCESS_TTL", "GATEPASS_DATA_DIR", "GATEPASS_"],
)
def test_unknown_gatepass_variable_is_config_error(tmp_path: Path, variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: SECRET}, data_dir=tmp_path)
    assert_one_line_naming(info.value, variable)
    assert SECRET not in str(info.value)


def test_unknown_variable_is_reported_in_upper_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"gatepass_acces_token_ttl": "1"}, data_dir=tmp_path)
    assert info.value.setting == "GATEPASS_ACCES_TOKEN_TTL"


def test_variables_without_the_prefix_are_ignored(tmp_path: Path) -> None:
    settings = load_settings({"PATH": "/bin", "ACCESS_TOKEN_TTL": "1"}, data_dir=tmp_path)
    assert settings.access_token_ttl == 900


@pytest.mark.parametrize("value", ["none", "None", "NONE", "HS512", "eddsa", "RS512", ""])
def test_invalid_jwt_algorithm_is_config_error(make_settings: SettingsFactory, value: str) -> None:
    assert_one_line_naming(
        config_error(make_settings, jwt_algorithm=value), "GATEPASS_JWT_ALGORITHM"
    )


# session secrets -----------------------------------------------------------


def test_short_session_secret_is_config_error_without_echoing_it(
    make_settings: SettingsFactory,
) -> None:
    short = "x7Q!short-secret-31-characters!"
    assert len(short) == 31
    error = config_error(make_settings, session_secrets=short)
    assert_one_line_naming(error, "GATEPASS_SESSION_SECRETS")
    assert short not in str(error)
    assert short not in repr(error)


def test_one_short_secret_among_good_ones_is_config_error_without_echoing(
    make_settings: SettingsFactory,
) -> None:
    short = "tiny-secret"
    error = config_error(make_settings, session_secrets=f"{SECRET},{short}")
    assert_one_line_naming(error, "GATEPASS_SESSION_SECRETS")
    assert short not in str(error)
    assert SECRET not in str(error)


def test_secret_of_32_characters_is_accepted_and_order_kept(
    make_settings: SettingsFactory,
) -> None:
    first, second = "a" * 32, "b" * 40
    settings = make_settings(session_secrets=f" {first} , {second} ")
    assert [s.get_secret_value() for s in settings.session_secrets] == [first, second]


def test_session_secrets_are_hidden_in_repr(make_settings: SettingsFactory) -> None:
    settings = make_settings(session_secrets=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize("name", POSITIVE_INT_SETTINGS)
def test_config_error_never_contains_the_session_secret(
    make_settings: SettingsFactory, name: str
) -> None:
    error = config_error(make_settings, session_secrets=SECRET, **{name: "0"})
    assert SECRET not in str(error)


# origins -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://app.example", "https://app.example"),
        ("https://app.example:443", "https://app.example"),
        ("http://app.example:80", "http://app.example"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example/", "https://app.example"),
        ("https://app.example:8443", "https://app.example:8443"),
        ("http://app.example:443", "http://app.example:443"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("  https://app.example  ", "https://app.example"),
    ],
)
def test_origins_are_normalised(raw: str, expected: str) -> None:
    assert normalise_origin(raw) == expected


def test_allowed_origins_setting_is_normalised_list(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        allowed_origins="HTTPS://A.Example:443, http://b.example:8080 ,,https://c.example/"
    )
    assert settings.allowed_origins == (
        "https://a.example",
        "http://b.example:8080",
        "https://c.example",
    )


@pytest.mark.parametrize(
    "value",
    [
        "null",
        "https://app.example/path",
        "https://app.example/?q=1",
        "https://app.example/#frag",
        "https://user@app.example",
        "https://user:pw@app.example",
        "ftp://app.example",
        "app.example",
        "https://",
        "https://app.example:99999",
        "https://app.example:port",
    ],
)
def test_bad_allowed_origin_is_config_error(make_settings: SettingsFactory, value: str) -> None:
    error = config_error(make_settings, allowed_origins=f"https://good.example,{value}")
    assert_one_line_naming(error, "GATEPASS_ALLOWED_ORIGINS")


# trusted proxies -----------------------------------------------------------


def test_trusted_proxies_are_parsed_as_networks(make_settings: SettingsFactory) -> None:
    settings = make_settings(trusted_proxies="10.0.0.1, 192.168.0.0/24,::1, 2001:db8::/32")
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/24"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert ipaddress.ip_address("192.168.0.77") in settings.trusted_proxies[1]


@pytest.mark.parametrize("value", ["proxy.example", "10.0.0.300", "10.0.0.0/33", "1.2.3.4:80"])
def test_bad_trusted_proxy_is_config_error(make_settings: SettingsFactory, value: str) -> None:
    error = config_error(make_settings, trusted_proxies=value)
    assert_one_line_naming(error, "GATEPASS_TRUSTED_PROXIES")


# derived values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("idle", "interval"),
    [("1800", 60.0), ("600", 60.0), ("599", 59.9), ("100", 10.0), ("1", 0.1)],
)
def test_session_touch_interval_is_min_of_60s_and_tenth_of_idle(
    make_settings: SettingsFactory, idle: str, interval: float
) -> None:
    settings = make_settings(session_idle_timeout=idle)
    policy = SessionPolicy(settings.session_idle_timeout, settings.session_absolute_timeout)
    assert policy.touch_interval == pytest.approx(interval)


@pytest.mark.parametrize("value", ["https://:pw@app.example", "https://@app.example"])
def test_origin_with_empty_username_userinfo_is_config_error(
    make_settings: SettingsFactory, value: str
) -> None:
    error = config_error(make_settings, allowed_origins=value)
    assert_one_line_naming(error, "GATEPASS_ALLOWED_ORIGINS")
