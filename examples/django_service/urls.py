from __future__ import annotations

from django.urls import path

import views

urlpatterns = [
    path("api/hello", views.Hello.as_view()),
    path("api/admin/report", views.AdminReport.as_view()),
]
