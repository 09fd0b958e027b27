"""Reading request bodies strictly, with limits.

Bodies are read by hand (not ``request.json()``) so that size, encoding,
nesting and number limits all end in a 4xx problem, never a 500.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

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
