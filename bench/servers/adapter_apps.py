"""Zero-argument factories over bench/adapters_*.py, for ``uvicorn --factory`` and
gunicorn: each module's ``bare_app()`` and ``gatepass_app(settings)``, the settings
read from the GATEPASS_* environment (bench/run.py gives the adapter the settings of
the ``gatepass serve`` whose tokens it is shown, and that server's folder)."""

from importlib import import_module
from typing import Any

from gatepass.config import load_settings


def _module(framework: str) -> Any:
    return import_module(f"adapters_{framework}")


def fastapi_bare() -> Any:
    return _module("fastapi").bare_app()


def fastapi_gatepass() -> Any:
    return _module("fastapi").gatepass_app(load_settings())


def flask_bare() -> Any:
    return _module("flask").bare_app()


def flask_gatepass() -> Any:
    return _module("flask").gatepass_app(load_settings())


def django_bare() -> Any:
    return _module("django").bare_app()


def django_gatepass() -> Any:
    return _module("django").gatepass_app(load_settings())
