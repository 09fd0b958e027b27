"""The public names of the package are a promise: this list changes only on purpose."""

import gatepass
import gatepass.stores


def test_package_exports_exactly_its_public_names() -> None:
    assert sorted(gatepass.__all__) == [
        "Accounts",
        "AuthenticationFailed",
        "Authenticator",
        "CSRFFailed",
        "ConfigError",
        "Gatepass",
        "GatepassError",
        "Identity",
        "PasswordHasher",
        "PasswordPolicyError",
        "RateLimited",
        "RequestError",
        "SessionManager",
        "Settings",
        "StoreUnavailable",
        "__version__",
        "load_settings",
    ]
    for name in gatepass.__all__:
        assert hasattr(gatepass, name), name


def test_every_store_name_is_importable() -> None:
    for name in gatepass.stores.__all__:
        assert hasattr(gatepass.stores, name), name
    assert "SqlStore" in gatepass.stores.__all__
    assert "Store" in gatepass.stores.__all__
