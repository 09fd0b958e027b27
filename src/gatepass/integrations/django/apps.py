"""The Django app (``INSTALLED_APPS``): it reads the ``GATEPASS`` dict at start-up
and holds this process's gatepass runtime, so the state lives on the app config
instance rather than in a module global."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.apps import AppConfig, apps  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from gatepass.integrations.django._runtime import Runtime, make_runtime
from gatepass.integrations.django.conf import SETTING_NAME, Options, read_options

APP_LABEL = "gatepass"
MIDDLEWARE_PATH = "gatepass.integrations.django.middleware.GatepassMiddleware"
DJANGO_CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"


class GatepassAppConfig(AppConfig):  # type: ignore[misc]
    """``gatepass.integrations.django``: one runtime per process, built on first use."""

    name = "gatepass.integrations.django"
    label = APP_LABEL
    verbose_name = "gatepass"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._options: Options | None = None
        self._runtime: Runtime | None = None

    def ready(self) -> None:
        # Check the settings now, so a typo stops start-up instead of the first request.
        self._options = read_options(getattr(settings, SETTING_NAME, None))
        setting_changed.connect(self._setting_changed, dispatch_uid="gatepass-settings")
        checks.register(check_middleware_order, checks.Tags.security)

    @property
    def runtime(self) -> Runtime:
        """This process's runtime (embedded or resource server), built on first use."""
        runtime = self._runtime
        if runtime is not None:
            return runtime
        with self._lock:
            if self._runtime is None:
                options = self._options or read_options(getattr(settings, SETTING_NAME, None))
                self._options = options
                self._runtime = make_runtime(options)
            return self._runtime

    def now(self) -> float:
        """The time by the configured ``CLOCK`` (tests inject one), else the system's."""
        options = self._options or read_options(getattr(settings, SETTING_NAME, None))
        clock = getattr(options, "clock", None)  # a resource server has none
        return clock() if clock is not None else time.time()

    def reset(self) -> None:
        """Close the runtime; the next request builds one from the current settings."""
        with self._lock:
            runtime, self._runtime, self._options = self._runtime, None, None
        if runtime is not None:
            runtime.close()

    def _setting_changed(self, *, setting: str, **_: Any) -> None:
        # override_settings(GATEPASS=...) in tests, or a settings reload.
        if setting == SETTING_NAME:
            self.reset()


def app_config() -> GatepassAppConfig:
    """The installed app, or a clear error naming what to add."""
    try:
        config = apps.get_app_config(APP_LABEL)
    except LookupError:
        raise ImproperlyConfigured(
            "add 'gatepass.integrations.django' to INSTALLED_APPS to use gatepass"
        ) from None
    if not isinstance(config, GatepassAppConfig):
        raise ImproperlyConfigured(f"the app labelled {APP_LABEL!r} is not gatepass's")
    return config


def check_middleware_order(**_: Any) -> list[Any]:
    """GatepassMiddleware must run before Django's CSRF middleware, which reads what
    gatepass decided about a Bearer-authenticated request."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware or DJANGO_CSRF_MIDDLEWARE not in middleware:
        return []
    if middleware.index(MIDDLEWARE_PATH) > middleware.index(DJANGO_CSRF_MIDDLEWARE):
        return [
            checks.Warning(
                "GatepassMiddleware comes after CsrfViewMiddleware",
                hint="Put it before, so Bearer requests need no Django CSRF token.",
                id="gatepass.W001",
            )
        ]
    return []
