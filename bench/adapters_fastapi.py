"""What the FastAPI adapter adds to a request: bare FastAPI against the same route
behind ``current_identity``, with a Bearer token the verifier has cached.

Usage: python bench/adapters_fastapi.py [--requests N] [--rounds R]

``bare_app()`` and ``gatepass_app(settings)`` are the app factories bench/run.py
serves; run directly, this measures in process (httpx ASGITransport, no sockets):
CPU time per request of each, in interleaved rounds so both see the same machine
state, and prints the medians and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI

from gatepass.authenticator import Identity
from gatepass.config import Settings, load_settings
from gatepass.integrations.fastapi import current_identity, gatepass_lifespan, install
from gatepass.passwords import PasswordHasher

BASE_URL = "https://bench.example"
ACCOUNT = {"email": "bench@example.com", "password": "a bench passphrase"}
PAYLOAD = {"status": "ok", "items": [1, 2, 3]}


def bare_app() -> FastAPI:
    """One GET route returning a small JSON document, no authentication."""
    app = FastAPI(openapi_url=None)

    @app.get("/item")
    async def item() -> dict[str, Any]:
        return PAYLOAD

    return app


def gatepass_app(settings: Settings, *, hasher: PasswordHasher | None = None) -> FastAPI:
    """The same route behind ``current_identity``, gatepass embedded (its lifespan
    opens the instance; the auth routes are not mounted, the bench signs in through
    the instance itself)."""
    app = FastAPI(openapi_url=None, lifespan=gatepass_lifespan(settings, hasher=hasher))
    install(app)

    @app.get("/item")
    async def item(identity: Annotated[Identity, Depends(current_identity)]) -> dict[str, Any]:
        return PAYLOAD

    return app


async def _cpu_per_request(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        response = await client.get("/item", headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected {response.status_code}: {response.text}")
    return (time.process_time() - start) / n * 1e6


async def measure(requests: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            {"GATEPASS_PUBLIC_URL": BASE_URL}, data_dir=Path(folder) / ".gatepass"
        )
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        bare, guarded = bare_app(), gatepass_app(settings, hasher=hasher)
        async with guarded.router.lifespan_context(guarded):
            gp = guarded.state.gatepass
            user = await gp.accounts.register(ACCOUNT["email"], ACCOUNT["password"])
            pair = await gp.accounts.start_token_family(user, ip=None, user_agent=None)
            auth = {"Authorization": f"Bearer {pair.access_token}"}
            bare_client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=bare), base_url=BASE_URL
            )
            gp_client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=guarded), base_url=BASE_URL
            )
            async with bare_client, gp_client:
                await _cpu_per_request(bare_client, {}, 200)  # warm-up
                await _cpu_per_request(gp_client, auth, 200)
                bare_us, gp_us = [], []
                for _ in range(rounds):
                    bare_us.append(await _cpu_per_request(bare_client, {}, requests))
                    gp_us.append(await _cpu_per_request(gp_client, auth, requests))
        return statistics.median(bare_us), statistics.median(gp_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    args = parser.parse_args()
    bare, guarded = asyncio.run(measure(args.requests, args.rounds))
    print(f"bare FastAPI                     {bare:8.1f} µs CPU / request")
    print(f"current_identity, cached Bearer  {guarded:8.1f} µs CPU / request")
    print(f"added by gatepass                {guarded - bare:8.1f} µs (target ≤ 15)")


if __name__ == "__main__":
    main()
