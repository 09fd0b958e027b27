"""Django and Django REST framework adapter.

Add ``"gatepass.integrations.django"`` to ``INSTALLED_APPS``, configure one
``GATEPASS`` dict in the project's settings (:mod:`.conf`), put
:class:`~.middleware.GatepassMiddleware` before Django's ``CsrfViewMiddleware``,
and, in embedded mode, ``path("", include("gatepass.integrations.django.urls"))``
for gatepass's own routes. DRF views use :class:`~.drf.GatepassAuthentication`
and :func:`~.drf.roles_required` (``gatepass.integrations.django.drf``).

Two modes, as in every adapter: **embedded** (this process holds a
:class:`~gatepass.core.Gatepass`: Bearer first, else gatepass's session cookie,
routes served) and **resource server** (it trusts tokens of a running
``gatepass serve`` through :class:`gatepass.verifier.Verifier`: Bearer only).

Nothing here is imported by ``import gatepass``; this package imports Django.
"""

from __future__ import annotations

__all__: list[str] = []
