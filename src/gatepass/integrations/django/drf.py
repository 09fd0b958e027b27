"""Django REST framework: an authentication class, role permissions and an exception
handler that answers gatepass's errors as problem+json with the contract's statuses.

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "gatepass.integrations.django.drf.GatepassAuthentication",  # first: its
            # challenge is what makes DRF answer 401 rather than 403
        ],
        "EXCEPTION_HANDLER": "gatepass.integrations.django.drf.exception_handler",
    }

    class Reports(APIView):
        permission_classes = [IsAuthenticated, roles_required("admin")]

``request.user`` is a :class:`GatepassUser` (no database row: gatepass's users
live in gatepass's store) and ``request.auth`` the principal (an
:class:`~gatepass.authenticator.Identity` or a :class:`gatepass.verifier.VerifiedToken`).

**CSRF.** DRF's views are exempt from Django's CSRF middleware, and DRF's own
``SessionAuthentication`` enforces Django's CSRF only when it is the class that
authenticated. A request gatepass authenticated never reaches it, and gatepass's
rule applies instead (cookie + unsafe method: ``X-CSRF-Token`` and a trusted
``Origin``); a request with no gatepass credential falls through to the next class,
so ``SessionAuthentication`` after this one keeps Django's CSRF for Django's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.http import HttpRequest  # type: ignore[import-untyped]
from rest_framework import exceptions  # type: ignore[import-untyped]
from rest_framework.authentication import BaseAuthentication  # type: ignore[import-untyped]
from rest_framework.permissions import BasePermission  # type: ignore[import-untyped]
from rest_framework.response import Response  # type: ignore[import-untyped]

from gatepass.errors import AuthenticationFailed, GatepassError, PermissionDenied
from gatepass.integrations._principal import check_principal
from gatepass.integrations.django._runtime import Principal, authenticate_request
from gatepass.integrations.django.apps import app_config
from gatepass.integrations.django.middleware import CHECKED_ATTRIBUTE
from gatepass.web import PROBLEM_MEDIA_TYPE, Problem, problem_body, problem_for

MISSING_ROLE = "A required role is missing."


class GatepassUser:
    """``request.user`` for a gatepass-authenticated request: enough of Django's user
    interface for permissions and templates, and the principal behind it."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.pk = self.id = principal.user_id
        self.roles: tuple[str, ...] = tuple(principal.roles)
        self.method = principal.method

    @property
    def email(self) -> str | None:
        """The address when the principal carries one (embedded mode)."""
        user = getattr(self.principal, "user", None)
        email = getattr(user, "email", None)
        return email if isinstance(email, str) else None

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def __str__(self) -> str:
        return self.pk

    def __repr__(self) -> str:
        return f"GatepassUser({self.pk!r}, method={self.method!r})"


class GatepassProblem(exceptions.APIException):  # type: ignore[misc]
    """A gatepass error as a DRF exception (403, 503 ...), carrying its problem document."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(detail=str(problem.body["detail"]))
        self.status_code = problem.status
        self.problem = problem
        retry = problem.headers.get("Retry-After")
        # DRF's own handler turns ``wait`` into Retry-After, should the project keep it.
        self.wait = int(retry) if retry is not None else None


class GatepassAuthenticationFailed(exceptions.AuthenticationFailed):  # type: ignore[misc]
    """A refused credential (401); DRF adds the challenge of ``authenticate_header``."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(detail=str(problem.body["detail"]))
        self.problem = problem


def _as_api_exception(exc: GatepassError) -> exceptions.APIException:
    problem = problem_for(exc)
    if problem is None:
        raise exc
    if isinstance(exc, AuthenticationFailed):
        return GatepassAuthenticationFailed(problem)
    return GatepassProblem(problem)


class GatepassAuthentication(BaseAuthentication):  # type: ignore[misc]
    """Authenticates by gatepass's hybrid rules (embedded) or its Bearer tokens
    (resource server). Returns ``None`` when no gatepass credential was sent, so a
    later class may try; a bad one is refused (401) without trying the others."""

    def authenticate(self, request: Any) -> tuple[GatepassUser, Principal] | None:
        django_request: HttpRequest = request._request
        if getattr(django_request, CHECKED_ATTRIBUTE, False):
            principal: Principal | None = django_request.gatepass_identity
        else:
            try:
                principal = authenticate_request(app_config().runtime, django_request)
            except GatepassError as exc:
                raise _as_api_exception(exc) from None
        if principal is None:
            return None
        return GatepassUser(principal), principal

    def authenticate_header(self, request: Any) -> str:
        # Returning a challenge is what makes DRF answer 401 instead of 403.
        sent = request._request.META.get("HTTP_AUTHORIZATION") is not None
        return 'Bearer error="invalid_token"' if sent else "Bearer"


class HasRoles(BasePermission):  # type: ignore[misc]
    """Allows a gatepass-authenticated caller holding every role of ``required_roles``
    (403 otherwise; 401 when no one is authenticated). Use :func:`roles_required`."""

    required_roles: ClassVar[tuple[str, ...]] = ()
    message = MISSING_ROLE

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not isinstance(user, GatepassUser):
            return False
        return all(role in user.roles for role in self.required_roles)


def roles_required(*roles: str) -> type[HasRoles]:
    """A permission class requiring every one of ``roles``: ``roles_required("admin")``."""
    if not roles or not all(isinstance(role, str) and role for role in roles):
        raise ValueError("roles_required needs one or more role names")
    name = "HasRoles_" + "_".join(roles)
    return type(name, (HasRoles,), {"required_roles": tuple(roles)})


class SignInRequirement(BasePermission):  # type: ignore[misc]
    """Allows a gatepass-authenticated caller whose sign-in is at most ``max_age``
    seconds old and, with ``second_factor``, used two factors; 403 problem+json with
    ``code`` ``reauthentication_required`` / ``second_factor_required`` otherwise.
    Use :func:`fresh_sign_in_required` or :data:`SecondFactorRequired`."""

    max_age: ClassVar[float | None] = None
    second_factor: ClassVar[bool] = False

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not isinstance(user, GatepassUser):
            return False
        try:
            check_principal(
                user.principal,
                app_config().now(),
                max_age=self.max_age,
                second_factor=self.second_factor,
            )
        except PermissionDenied as exc:
            raise _as_api_exception(exc) from None
        return True


def fresh_sign_in_required(max_age: float) -> type[SignInRequirement]:
    """A permission class requiring a sign-in within ``max_age`` seconds."""
    if max_age <= 0:
        raise ValueError("max_age must be positive")
    name = f"FreshSignIn_{int(max_age)}"
    return type(name, (SignInRequirement,), {"max_age": float(max_age)})


#: A permission class requiring a sign-in made with two factors.
SecondFactorRequired = type("SecondFactorRequired", (SignInRequirement,), {"second_factor": True})


def _problem(status: int, detail: str, headers: dict[str, str]) -> Response:
    response = Response(
        problem_body(status, detail),
        status=status,
        headers=headers,
        content_type=PROBLEM_MEDIA_TYPE,
    )
    response["Cache-Control"] = "no-store"
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: gatepass's errors, DRF's 401 (not authenticated,
    bad credential) and 403 (permission denied) as problem+json with fixed text and
    the right challenge; everything else as DRF's own handler answers it."""
    if isinstance(exc, GatepassAuthenticationFailed | GatepassProblem):
        # gatepass's own document (its code, its field problems), as the server sends it.
        problem = exc.problem
        document = Response(
            dict(problem.body),
            status=problem.status,
            headers=dict(problem.headers),
            content_type=PROBLEM_MEDIA_TYPE,
        )
        document["Cache-Control"] = "no-store"
        return document
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers = {}
        challenge = getattr(exc, "auth_header", None)
        if challenge:
            headers["WWW-Authenticate"] = challenge
        status = 401 if challenge else 403
        return _problem(
            status, "Authentication required." if status == 401 else "Forbidden", headers
        )
    if isinstance(exc, exceptions.PermissionDenied):
        detail = MISSING_ROLE if str(exc.detail) == MISSING_ROLE else "Forbidden"
        return _problem(403, detail, {})
    # Imported here: rest_framework.views imports the authentication classes named in
    # the settings, this module among them.
    from rest_framework.views import (  # type: ignore[import-untyped]
        exception_handler as drf_exception_handler,
    )

    response: Response | None = drf_exception_handler(exc, context)
    return response


__all__: Sequence[str] = (
    "GatepassAuthentication",
    "GatepassUser",
    "HasRoles",
    "SecondFactorRequired",
    "SignInRequirement",
    "exception_handler",
    "fresh_sign_in_required",
    "roles_required",
)
