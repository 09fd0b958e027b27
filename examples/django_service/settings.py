"""A DRF microservice that trusts the tokens of a running ``gatepass serve``.

Configured from the environment: ``AUTH_SERVER_URL`` (the auth server's URL, its
``GATEPASS_ISSUER``), ``AUTH_AUDIENCE`` (default ``gatepass``) and, to follow its
revocation feed, ``REVOCATION_FEED_TOKEN``.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-change-me-0123456789abcdef")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "gatepass.integrations.django",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "gatepass.integrations.django.middleware.GatepassMiddleware",
]
DATABASES: dict[str, object] = {}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gatepass.integrations.django.drf.GatepassAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "gatepass.integrations.django.drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

GATEPASS: dict[str, object] = {
    "MODE": "resource_server",
    "ISSUER": os.environ["AUTH_SERVER_URL"],
    "AUDIENCE": os.environ.get("AUTH_AUDIENCE", "gatepass"),
}
if os.environ.get("REVOCATION_FEED_TOKEN"):
    GATEPASS["REVOCATION_FEED"] = {"TOKEN": os.environ["REVOCATION_FEED_TOKEN"]}
