"""WSGI entry of the test project, for a real server (gunicorn)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
application = get_wsgi_application()

if os.environ.get("DJANGO_GATEPASS_OPEN_BEFORE_FORK"):
    # Open gatepass in the master (gunicorn --preload): its loop thread does not
    # survive the fork, so each worker must start its own.
    from gatepass.integrations.django.apps import app_config

    app_config().runtime.gatepass()  # type: ignore[attr-defined]
