"""Django REST framework, one project: GET /me without authentication (the ceiling of
the DRF rows) and GET /jwt/me behind djangorestframework-simplejwt's default
``JWTAuthentication`` (which reads the user from the database on every request, here
SQLite). POST /token hands out an access token for the bench user (bench only).

Run as ``gunicorn drf_app:application`` from a scratch folder (the database lives there).
"""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.urandom(32).hex(),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
    ],
    MIDDLEWARE=[],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "drf_bench.sqlite3"}},
    USE_TZ=True,
    REST_FRAMEWORK={
        # The bare view sets its own (none); these are the ones /jwt/me uses.
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "rest_framework_simplejwt.authentication.JWTAuthentication"
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.permissions import AllowAny  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

USER = {
    "id": "00000000-0000-0000-0000-000000000001",
    "email": "bench@example.com",
    "roles": ["user"],
}

call_command("migrate", verbosity=0, interactive=False)
from django.contrib.auth.models import User  # noqa: E402

BENCH_USER, _ = User.objects.get_or_create(username="bench", defaults={"email": USER["email"]})


class BareMe(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request):
        return Response({**USER, "method": "none"})


class JwtMe(APIView):
    def get(self, request):
        user = request.user
        return Response(
            {"id": str(user.pk), "email": user.email, "roles": ["user"], "method": "bearer"}
        )


class IssueToken(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def post(self, request):
        return Response({"access_token": str(AccessToken.for_user(BENCH_USER))})


urlpatterns = [
    path("me", BareMe.as_view()),
    path("jwt/me", JwtMe.as_view()),
    path("token", IssueToken.as_view()),
]

application = get_wsgi_application()
