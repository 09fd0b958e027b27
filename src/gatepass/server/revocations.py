"""``GET /auth/revocations``: the revocation feed resource servers follow.

The contract (docs/revocation-feed.md): ``Authorization: Bearer
<GATEPASS_REVOCATION_FEED_TOKEN>``; ``?cursor=`` from the previous answer (none
the first time) and ``?wait=`` seconds (0-30) to hold the request open while
nothing is new. The answer is this process's view of the revocations
(:class:`gatepass.revocation_journal.FeedPage`): the entries after the cursor,
or a snapshot of every live one when the cursor cannot be continued here.

An answer vouches that the server's view was current when it was sent (the
same check that lets this process accept a Bearer token), so even one with no
entries is proof of freshness; when the view cannot be vouched for (the
database or the event bus is down) the answer is 503 and the reader must stop
trusting what it holds once its own bound passes.
"""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gatepass._compare import constant_time_equals
from gatepass.errors import AuthenticationFailed, InvalidRequest
from gatepass.revocation import REVOCATION_POLL_SECONDS
from gatepass.revocation_journal import FeedPage, page_json, parse_cursor
from gatepass.server.context import gatepass
from gatepass.server.problems import problem

PATH = "/auth/revocations"
#: The longest a reader may ask the server to hold a request open.
MAX_WAIT_SECONDS = 30
_WAIT = re.compile(r"[0-9]{1,2}(?:\.[0-9]{1,3})?")
_BEARER = "bearer "
NO_STORE = {"Cache-Control": "no-store"}


def _authorize(expected: str, authorization: str | None) -> None:
    if authorization is None:
        raise AuthenticationFailed("The revocation feed needs a bearer token.")
    presented = ""
    if authorization[: len(_BEARER)].lower() == _BEARER:
        presented = authorization[len(_BEARER) :].strip()
    if not constant_time_equals(expected, presented):
        raise AuthenticationFailed("Invalid revocation feed token.", token_sent=True)


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"Give {name} at most once.", status=400)
    return values[0] if values else None


def _query(request: Request) -> tuple[str | None, float]:
    """``(cursor, wait)`` of the query; 400 when either is malformed."""
    cursor = _one(request, "cursor")
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except ValueError:
            raise InvalidRequest("Malformed cursor.", status=400) from None
    wait_text = _one(request, "wait")
    if wait_text is None:
        return cursor, 0.0
    if not _WAIT.fullmatch(wait_text) or float(wait_text) > MAX_WAIT_SECONDS:
        raise InvalidRequest(f"wait is seconds from 0 to {MAX_WAIT_SECONDS}.", status=400)
    return cursor, float(wait_text)


async def revocation_feed(request: Request) -> Response:
    gp = gatepass(request)
    token = gp.settings.revocation_feed_token
    if token is None:
        # Off: the same answer as for a path that does not exist.
        return problem(404)
    _authorize(token.get_secret_value(), request.headers.get("authorization"))
    cursor, wait = _query(request)
    view = gp.revocations
    journal = view.journal
    deadline = time.monotonic() + wait
    await view.ensure_current()
    while True:
        entries = journal.since(cursor)
        if entries is None:
            page = FeedPage(journal.cursor, True, view.live_entries(), view.retention)
            break
        remaining = deadline - time.monotonic()
        if entries or remaining <= 0 or cursor is None:
            page = FeedPage(journal.cursor, False, entries, view.retention)
            break
        # Woken by news at once; else every poll interval, so other nodes' entries
        # that only the database carries are read in time and the answer, when it
        # comes, vouches for a current view.
        await journal.wait(cursor, min(remaining, REVOCATION_POLL_SECONDS))
        await view.ensure_current()
        if await request.is_disconnected():
            return Response(status_code=204)
    return JSONResponse(page_json(page), headers=NO_STORE)
