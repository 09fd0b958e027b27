"""What gatepass's DRF authentication adds to a DRF view, in CPU µs per request.

Usage: python bench/adapters_django.py [--quick] [--mode embedded|resource_server|both]

Two views of the same project answer the same small JSON: ``bare`` (AllowAny, no
authentication classes) and ``gatepass`` (``GatepassAuthentication`` +
``IsAuthenticated``), each called directly with a request built by Django's
``RequestFactory``, the same cached Bearer token every time. Rounds interleave the
two; each round times a batch of each with ``time.process_time`` (CPU of every
thread of the process, so the loop thread's share in embedded mode counts), and
the table shows the median over rounds and the difference: what the adapter adds.

Embedded mode opens gatepass on a SQLite store in a temporary folder; resource
server mode starts a real ``gatepass serve`` and verifies its tokens with
``gatepass.verifier.Verifier``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
TARGET_US = 15.0


def configure(gatepass_config: dict[str, Any]) -> None:
    settings.configure(
        SECRET_KEY="bench-only-secret-key-0123456789abcdefghij",
        ALLOWED_HOSTS=["testserver"],
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
            "UNAUTHENTICATED_USER": None,
            "EXCEPTION_HANDLER": "gatepass.integrations.django.drf.exception_handler",
        },
        GATEPASS=gatepass_config,
    )
    django.setup()


urlpatterns: list[Any] = []


def make_views() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from gatepass.integrations.django.drf import GatepassAuthentication

    class Bare(APIView):
        authentication_classes: list[Any] = []  # noqa: RUF012
        permission_classes = [AllowAny]  # noqa: RUF012

        def get(self, request: Any) -> Response:
            return Response({"hello": "world"})

    class Guarded(Bare):
        authentication_classes = [GatepassAuthentication]  # noqa: RUF012
        permission_classes = [IsAuthenticated]  # noqa: RUF012

    return Bare.as_view(), Guarded.as_view()


def cpu_us_per_request(view: Callable[..., Any], make_request: Callable[[], Any], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        response = view(make_request())
        response.render()
        if response.status_code != 200:
            raise SystemExit(f"unexpected status {response.status_code}")
    return (time.process_time() - start) / n * 1e6


def measure(token: str, rounds: int, batch: int) -> tuple[float, float]:
    from django.test import RequestFactory

    from gatepass.integrations.django.apps import app_config

    bare, guarded = make_views()
    factory = RequestFactory()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def request() -> Any:
        return factory.get("/hello", **auth)

    # Credentials are checked first: 200 with the token, 401 without or forged.
    if guarded(request()).status_code != 200:
        raise SystemExit("the token is refused")
    if guarded(factory.get("/hello")).status_code != 401:
        raise SystemExit("a request without a token is not refused with 401")
    forged = factory.get("/hello", HTTP_AUTHORIZATION=f"Bearer {token[:-2]}AA")
    if guarded(forged).status_code != 401:
        raise SystemExit("a forged token is not refused with 401")
    for view in (bare, guarded):  # warm-up
        cpu_us_per_request(view, request, batch)
    bare_us: list[float] = []
    guarded_us: list[float] = []
    for _ in range(rounds):
        bare_us.append(cpu_us_per_request(bare, request, batch))
        guarded_us.append(cpu_us_per_request(guarded, request, batch))
    app_config().reset()
    return statistics.median(bare_us), statistics.median(guarded_us)


@contextmanager
def embedded(data_dir: Path) -> Iterator[str]:
    from django.test import Client

    from gatepass.passwords import PasswordHasher

    configure(
        {
            "MODE": "embedded",
            "READ_ENV": False,
            "DATA_DIR": data_dir,
            "HASHER": lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
            "PRUNE_INTERVAL": None,
            "SETTINGS": {"PUBLIC_URL": "http://testserver", "DEV": True},
        }
    )
    global urlpatterns
    from django.urls import include, path

    urlpatterns = [path("", include("gatepass.integrations.django.urls"))]
    client = Client()
    body = {"email": "bench@example.com", "password": PASSWORD}
    client.post("/auth/register", body, content_type="application/json")
    answer = client.post(
        "/auth/login", {**body, "client": "api"}, content_type="application/json"
    )
    yield str(json.loads(answer.content)["access_token"])


@contextmanager
def resource_server(data_dir: Path) -> Iterator[str]:
    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.e2e_support import running_server

    feed_token = "bench-feed-token-0123456789abcdef"
    env = {"GATEPASS_DEV": "1", "GATEPASS_REVOCATION_FEED_TOKEN": feed_token}
    with running_server(data_dir, env) as server:
        body = {"email": "bench@example.com", "password": PASSWORD}
        httpx.post(f"{server.url}/auth/register", json=body).raise_for_status()
        answer = httpx.post(f"{server.url}/auth/login", json={**body, "client": "api"})
        answer.raise_for_status()
        configure(
            {
                "MODE": "resource_server",
                "ISSUER": server.url,
                "REVOCATION_FEED": {"TOKEN": feed_token},
            }
        )
        yield str(answer.json()["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", choices=["embedded", "resource_server"], default="embedded")
    args = parser.parse_args()
    rounds, batch = (5, 500) if args.quick else (15, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        runner = embedded if args.mode == "embedded" else resource_server
        with runner(Path(tmp) / ".gatepass") as token:
            bare, guarded = measure(token, rounds, batch)
    added = guarded - bare
    print(f"DRF + gatepass ({args.mode}), cached Bearer, CPU µs per request")
    print(f"  median of {rounds} interleaved rounds of {batch} requests")
    print(f"  bare DRF view (AllowAny)             {bare:8.1f}")
    print(f"  GatepassAuthentication + IsAuth.     {guarded:8.1f}")
    print(f"  added by gatepass                    {added:8.1f}  (target <= {TARGET_US:.0f})")


if __name__ == "__main__":
    main()
