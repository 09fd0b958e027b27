"""A small Django project for the adapter's tests: host views (plain Django and DRF)
next to gatepass's own routes. :func:`configure` sets it up once per process."""

from __future__ import annotations

import importlib

import django
from django.conf import settings as django_settings


def configure() -> None:
    """Configure Django with :mod:`tests.django_project.settings` (once per process)."""
    if not django_settings.configured:
        project = importlib.import_module("tests.django_project.settings")
        django_settings.configure(
            **{name: getattr(project, name) for name in dir(project) if name.isupper()}
        )
        django.setup()
