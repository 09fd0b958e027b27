"""A resource server in a process of its own: a RevocationFeed and the claims it judges.

Run as ``python tests/revocation_probe.py CONFIG``, where CONFIG is JSON:
``{"url", "token", "max_staleness", "redis_url" (optional), "claims": [...]}``,
each claim an object with the fields of :class:`gatepass.tokens.AccessClaims`.
It calls ``check`` on every claim every few milliseconds and prints one line per
change of outcome, ``<index> <outcome> <time.monotonic()>`` with outcome ``ok``,
``revoked`` or ``stale`` (CLOCK_MONOTONIC is one clock for every process on the
machine, so the test compares these times with its own). It prints ``started``
first and stops when its stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from gatepass.errors import InvalidToken, RevocationsStale
from gatepass.tokens import AccessClaims
from gatepass.verifier.revocations import RevocationFeed

CHECK_EVERY_SECONDS = 0.002


def outcome(feed: RevocationFeed, claims: AccessClaims) -> str:
    try:
        feed.check(claims)
    except RevocationsStale:
        return "stale"
    except InvalidToken:
        return "revoked"
    return "ok"


def main() -> None:
    config = json.loads(sys.argv[1])
    claims = [
        AccessClaims(
            sub=c["sub"],
            jti=c["jti"],
            sid=c["sid"],
            roles=tuple(c["roles"]),
            iat=c["iat"],
            exp=c["exp"],
        )
        for c in config["claims"]
    ]
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    feed = RevocationFeed(
        config["url"],
        token=config["token"],
        max_staleness=config["max_staleness"],
        redis_url=config.get("redis_url"),
    )
    print("started", flush=True)
    last: list[str | None] = [None] * len(claims)
    while not done.is_set():
        for index, claim in enumerate(claims):
            now = outcome(feed, claim)
            if now != last[index]:
                last[index] = now
                print(f"{index} {now} {time.monotonic()!r}", flush=True)
        time.sleep(CHECK_EVERY_SECONDS)
    feed.close()


if __name__ == "__main__":
    main()
