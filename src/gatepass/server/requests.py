"""Reading request bodies and client facts strictly, with limits.

Bodies are read by hand (not ``request.json()``) so that size, encoding,
nesting and number limits all end in a 4xx problem, never a 500.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gatepass.config import ProxyNet
from gatepass.errors import FieldProblem, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MAX_BODY_BYTES = 64 * 1024
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_form(request: Request) -> bool:
    return media_type(request) == FORM_MEDIA_TYPE


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("Request body too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("Request body too large.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_fields(request: Request) -> dict[str, Any]:
    """The body as a dict: JSON (``application/json`` or ``+json``) or an HTML form."""
    kind = media_type(request)
    body = await read_body(request)
    if kind == FORM_MEDIA_TYPE:
        try:
            text = body.decode("utf-8")
            return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=100))
        except ValueError:
            raise InvalidRequest("Form body is not valid.", status=400) from None
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json.")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and integers beyond Python's digit limit.
        raise InvalidRequest("Body is not valid JSON.", status=400) from None
    if not isinstance(data, dict):
        raise InvalidRequest("Body must be a JSON object.")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate into ``model``; errors name fields and rules, never the values sent."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            FieldProblem(".".join(str(part) for part in err["loc"]) or "body", err["msg"])
            for err in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        raise InvalidRequest("Request body is invalid.", problems=problems) from None


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _is_trusted(address: str | None, proxies: Sequence[ProxyNet]) -> bool:
    if address is None or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_ip(request: Request, proxies: Sequence[ProxyNet]) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy, in which
    case the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy."""
    peer = _peer(request)
    if not _is_trusted(peer, proxies):
        return peer
    # Every header line: a proxy may add its own line rather than append to the
    # client's, and the client's first line must not be taken for the proxy's word.
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for"))
    for candidate in reversed([part.strip() for part in forwarded.split(",")]):
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return peer
        if not _is_trusted(candidate, proxies):
            return candidate
    return peer
