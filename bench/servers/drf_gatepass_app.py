"""DRF + gatepass's ``GatepassAuthentication`` (embedded), one project: GET /me without
authentication and GET /gatepass/me behind ``GatepassAuthentication`` +
``IsAuthenticated``. Settings come from the GATEPASS_* environment and the data folder
from the working directory (bench/run.py runs it in the folder of a ``gatepass serve``
with the same settings, so the same database and keys).

Run under gatepass's .venv as ``gunicorn drf_gatepass_app:application``.
"""

import os
from pathlib import Path

import django
from django.conf import settings

from gatepass.config import DATA_DIR_NAME

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.urandom(32).hex(),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
        "gatepass.integrations.django",
    ],
    MIDDLEWARE=[],
    DATABASES={},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "UNAUTHENTICATED_USER": None,
        "EXCEPTION_HANDLER": "gatepass.integrations.django.drf.exception_handler",
    },
    GATEPASS={
        "MODE": "embedded",
        "READ_ENV": True,
        "DATA_DIR": Path.cwd() / DATA_DIR_NAME,
        "PRUNE_INTERVAL": None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.permissions import AllowAny, IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from gatepass.integrations.django.drf import GatepassAuthentication  # noqa: E402

USER = {
    "id": "00000000-0000-0000-0000-000000000001",
    "email": "bench@example.com",
    "roles": ["user"],
}


class BareMe(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request):
        return Response({**USER, "method": "none"})


class GatepassMe(APIView):
    authentication_classes = (GatepassAuthentication,)
    permission_classes = (IsAuthenticated,)

    def get(self, request):
        user = request.user
        return Response(
            {"id": user.id, "email": user.email, "roles": list(user.roles), "method": user.method}
        )


urlpatterns = [path("me", BareMe.as_view()), path("gatepass/me", GatepassMe.as_view())]

application = get_wsgi_application()
