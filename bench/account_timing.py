"""Response time of the mail-triggering routes for a known and an unknown address.

Usage: .venv/bin/python bench/account_timing.py [--samples N]

The routes must answer the same whatever the address (DESIGN §3.2), in time as
well as in status and body: the look-up, the link and the mail run after the
answer. This runs the auth server in process (SQLite in a temporary folder, mail to
its outbox), alternates requests for a registered and an unregistered address,
and prints the median of each and their difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from gatepass.config import load_settings
from gatepass.passwords import PasswordHasher
from gatepass.server.app import create_app

BASE_URL = "https://bench.invalid"
KNOWN = "known@example.com"
PASSWORD = "correct horse battery"
ROUTES = ("/auth/password/forgot", "/auth/email/resend")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            {
                "GATEPASS_PUBLIC_URL": BASE_URL,
                # Every request comes from one address and mails one account.
                "GATEPASS_MAIL_IP_LIMIT": "1000000",
                "GATEPASS_MAIL_ADDRESS_LIMIT": "1000000",
            },
            data_dir=Path(folder) / ".gatepass",
        )
        app = create_app(settings, hasher=PasswordHasher(time_cost=1, memory_cost=1024))
        with TestClient(app, base_url=BASE_URL) as client:
            client.post("/auth/register", json={"email": KNOWN, "password": PASSWORD})
            print(f"{'route':<24} {'known':>10} {'unknown':>10} {'difference':>11}")
            for route in ROUTES:
                known: list[float] = []
                unknown: list[float] = []
                for n in range(args.samples):
                    for email, into in ((KNOWN, known), (f"nobody{n}@example.com", unknown)):
                        start = time.perf_counter()
                        answer = client.post(route, json={"email": email})
                        into.append(time.perf_counter() - start)
                        answer.raise_for_status()
                a, b = statistics.median(known) * 1e3, statistics.median(unknown) * 1e3
                print(f"{route:<24} {a:>8.2f}ms {b:>8.2f}ms {a - b:>+9.2f}ms")


if __name__ == "__main__":
    main()
