"""The service's API: one view for any signed-in caller, one for admins."""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gatepass.integrations.django.drf import roles_required


class Hello(APIView):
    permission_classes: ClassVar[list[Any]] = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        # request.user is a GatepassUser; request.auth the verified token.
        return Response({"user": request.user.pk, "roles": list(request.user.roles)})


class AdminReport(APIView):
    permission_classes: ClassVar[list[Any]] = [IsAuthenticated, roles_required("admin")]

    def get(self, request: Request) -> Response:
        return Response({"report": "all good", "for": request.user.pk})
