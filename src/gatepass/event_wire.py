"""The event bus's wire format: one small JSON message per event.

The auth server's processes publish these on the Redis channel
:data:`DEFAULT_CHANNEL` (:mod:`gatepass.stores.redis_events`), and a resource
server that shares the Redis reads the revocations among them
(:class:`gatepass.verifier.RevocationFeed`). This module is the one place that
writes and reads the format, and imports no driver, so both sides can use it.

Every message is an object ``{"v": 1, "node": <sender tag>, "type": ..., ...}``:

* ``"revoked"``: ``"events"`` is a list of ``[id, kind, subject, value,
  created_at]`` rows of the revocation feed (:class:`RevocationEvent`);
* ``"user"``: ``"user_id"``;
* ``"sessions"``: ``"id_hashes"``, ``"handles"`` (lists of strings) and
  ``"user_id"`` (a string or null).

Anyone who can publish on the channel can send anything: the decoder is strict,
and every event only ever makes a reader trust less.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from gatepass.events import Event, Revoked, SessionsEnded, UserChanged
from gatepass.stores.base import RevocationEvent

DEFAULT_CHANNEL = "gatepass:events"
#: A message longer than this is not one of ours (a logout-all of a user with the
#: most families allowed is a few tens of KB).
MAX_MESSAGE_BYTES = 1 << 20
WIRE_VERSION = 1


def encode_revoked(events: Sequence[RevocationEvent], node: str) -> bytes:
    """The message announcing committed revocation-feed entries."""
    rows = [[e.id, e.kind, e.subject, e.value, e.created_at] for e in events]
    return _envelope(node, "revoked", {"events": rows})


def encode(event: UserChanged | SessionsEnded, node: str) -> bytes:
    """The message announcing a user change or ended sessions."""
    if isinstance(event, UserChanged):
        return _envelope(node, "user", {"user_id": event.user_id})
    return _envelope(
        node,
        "sessions",
        {
            "id_hashes": list(event.id_hashes),
            "handles": list(event.handles),
            "user_id": event.user_id,
        },
    )


def _envelope(node: str, kind: str, body: dict[str, Any]) -> bytes:
    message = {"v": WIRE_VERSION, "node": node, "type": kind, **body}
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: object, own_node: str) -> Event | None:
    """The event a message carries, ``None`` for one sent by ``own_node``;
    ValueError, TypeError or KeyError when it is not one of ours (a caller that
    reads the channel catches them and ignores the message)."""
    if not isinstance(data, bytes | str):
        raise TypeError("not a message")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError("message too large")
    message = json.loads(data)
    if not isinstance(message, dict) or message.get("v") != WIRE_VERSION:
        raise ValueError("unknown message")
    if message.get("node") == own_node:
        return None
    kind = message["type"]
    if kind == "revoked":
        rows = message["events"]
        if not isinstance(rows, list):
            raise TypeError("malformed revocations")
        return Revoked(tuple(_revocation(row) for row in rows))
    if kind == "user":
        return UserChanged(_text(message["user_id"]))
    if kind == "sessions":
        user_id = message.get("user_id")
        return SessionsEnded(
            tuple(_text(h) for h in _list(message["id_hashes"])),
            tuple(_text(h) for h in _list(message["handles"])),
            None if user_id is None else _text(user_id),
        )
    raise ValueError("unknown event type")


def _revocation(row: object) -> RevocationEvent:
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError("malformed revocation")
    event_id, kind, subject, value, created_at = row
    if not isinstance(event_id, int) or isinstance(event_id, bool):
        raise TypeError("malformed revocation id")
    if kind not in ("jti", "family", "epoch"):
        raise ValueError("unknown revocation kind")
    return RevocationEvent(
        id=event_id,
        kind=kind,
        subject=_text(subject),
        value=_number(value),
        created_at=_number(created_at),
    )


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError("expected a finite number")
    return float(value)
