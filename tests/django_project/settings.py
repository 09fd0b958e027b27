"""Settings of the test project. Each test replaces ``GATEPASS`` with
``override_settings`` (a real SQLite store in its own temporary folder)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from gatepass.passwords import PasswordHasher
from tests.conftest import FAST_HASHER_PARAMS

SECRET_KEY = "tests-only-django-secret-key-0123456789abcdef"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rest_framework",
    "gatepass.integrations.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gatepass.integrations.django.middleware.GatepassMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
# Django's own session (the one Django's CSRF guards) without a database table.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gatepass.integrations.django.drf.GatepassAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "gatepass.integrations.django.drf.exception_handler",
}
# In-process tests replace it with override_settings; a served copy of the project
# (gunicorn, tests/test_integration_django.py) names its folder and URL in the env.
GATEPASS = {
    "MODE": "embedded",
    "READ_ENV": False,
    "DATA_DIR": Path(
        os.environ.get("DJANGO_GATEPASS_DATA_DIR")
        or Path(tempfile.gettempdir()) / "gatepass-django-unused"
    ),
    "HASHER": functools.partial(PasswordHasher, **FAST_HASHER_PARAMS),
    "SETTINGS": {
        "PUBLIC_URL": os.environ.get("DJANGO_GATEPASS_PUBLIC_URL", "http://testserver"),
        "DEV": True,
    },
}
if os.environ.get("DJANGO_GATEPASS_PUBLIC_URL"):
    ALLOWED_HOSTS = ["127.0.0.1"]
