"""RFC 9457 problem+json responses. Only fixed, safe text reaches the client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import JSONResponse

from gatepass.errors import FieldProblem
from gatepass.web import PROBLEM_MEDIA_TYPE, Problem, problem_body


def problem(
    status: int,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    problems: Sequence[FieldProblem] = (),
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, problems),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_response(answer: Problem) -> JSONResponse:
    return JSONResponse(
        dict(answer.body),
        status_code=answer.status,
        headers=dict(answer.headers),
        media_type=PROBLEM_MEDIA_TYPE,
    )
