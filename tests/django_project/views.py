"""Host views: what a project's own code looks like next to gatepass."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from django.http import HttpRequest, JsonResponse
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gatepass.integrations.django.drf import (
    SecondFactorRequired,
    fresh_sign_in_required,
    roles_required,
)


def _who(request: HttpRequest) -> dict[str, Any]:
    principal = request.gatepass_identity
    if principal is None:
        return {"user": None}
    return {"user": principal.user_id, "method": principal.method}


def hello(request: HttpRequest) -> JsonResponse:
    """A plain Django view that reads ``request.gatepass_identity``."""
    return JsonResponse(_who(request))


def pid(request: HttpRequest) -> JsonResponse:
    """Which worker process answered, and for whom."""
    return JsonResponse({"pid": os.getpid(), **_who(request)})


def notes(request: HttpRequest) -> JsonResponse:
    """An unsafe plain Django view (not csrf_exempt)."""
    return JsonResponse(_who(request), status=201 if request.method == "POST" else 200)


def django_session_start(request: HttpRequest) -> JsonResponse:
    """Signs a visitor in to Django's own session (the cookie Django's CSRF guards)."""
    request.session["visitor"] = "django-user"
    return JsonResponse({"ok": True})


def django_session_notes(request: HttpRequest) -> JsonResponse:
    """A view acting for Django's session user."""
    return JsonResponse({"visitor": request.session.get("visitor")}, status=201)


class Me(APIView):
    permission_classes: ClassVar[list[type[Any]]] = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response(
            {
                "id": request.user.pk,
                "roles": list(request.user.roles),
                "method": request.auth.method,
            }
        )

    def post(self, request: Request) -> Response:
        return Response({"id": request.user.pk}, status=201)


class Admin(APIView):
    permission_classes: ClassVar[list[type[Any]]] = [IsAuthenticated, roles_required("admin")]

    def get(self, request: Request) -> Response:
        return Response({"admin": request.user.pk})


class Fresh(APIView):
    permission_classes: ClassVar[list[type[Any]]] = [IsAuthenticated, fresh_sign_in_required(300)]

    def get(self, request: Request) -> Response:
        return Response({"fresh": request.user.pk})


class TwoFactor(APIView):
    permission_classes: ClassVar[list[type[Any]]] = [IsAuthenticated, SecondFactorRequired]

    def get(self, request: Request) -> Response:
        return Response({"two_factor": request.user.pk})
