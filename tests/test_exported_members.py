"""The public names of the package are a promise: this list changes only on purpose."""

import inspect

import gatepass
import gatepass.errors
import gatepass.stores


def test_package_exports_exactly_its_public_names() -> None:
    assert sorted(gatepass.__all__) == [
        "Accounts",
        "AuthenticationFailed",
        "Authenticator",
        "CSRFFailed",
        "ConfigError",
        "Conflict",
        "CredentialsChanged",
        "DuplicateRecord",
        "EmailNotVerified",
        "EmailTaken",
        "FieldProblem",
        "Gatepass",
        "GatepassError",
        "Identity",
        "InvalidLink",
        "InvalidRefreshToken",
        "InvalidRequest",
        "InvalidToken",
        "KeysUnavailable",
        "NotFound",
        "Overloaded",
        "PasswordHasher",
        "PasswordPolicyError",
        "PayloadTooLarge",
        "PermissionDenied",
        "RateLimited",
        "ReauthenticationRequired",
        "RequestError",
        "RevocationsStale",
        "SessionManager",
        "Settings",
        "StoreError",
        "StoreUnavailable",
        "UnknownSigningKey",
        "UnsupportedMediaType",
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


def test_every_exception_is_in_one_exported_tree() -> None:
    """One root, all of it importable from the package: callers can catch any of it."""
    defined = {
        name: obj
        for name, obj in vars(gatepass.errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, Exception)
        and obj.__module__ == "gatepass.errors"
    }
    assert "GatepassError" in defined
    for name, cls in defined.items():
        assert issubclass(cls, gatepass.GatepassError), name
        assert name in gatepass.__all__, name
        assert getattr(gatepass, name) is cls
        assert name in (gatepass.errors.__doc__ or ""), f"{name} missing from the drawn tree"
