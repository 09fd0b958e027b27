from __future__ import annotations

from django.urls import include, path

from tests.django_project import views

urlpatterns = [
    path("", include("gatepass.integrations.django.urls")),
    path("hello", views.hello),
    path("pid", views.pid),
    path("notes", views.notes),
    path("django-session/start", views.django_session_start),
    path("django-session/notes", views.django_session_notes),
    path("api/me", views.Me.as_view()),
    path("api/admin", views.Admin.as_view()),
    path("api/fresh", views.Fresh.as_view()),
    path("api/two-factor", views.TwoFactor.as_view()),
]
