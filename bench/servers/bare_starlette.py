"""The ceiling: bare Starlette answering what /auth/me answers, with no authentication."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

USER = {
    "id": "00000000-0000-0000-0000-000000000001",
    "email": "bench@example.com",
    "roles": ["user"],
}


async def me(request: Request) -> JSONResponse:
    return JSONResponse({**USER, "method": "none"})


app = Starlette(routes=[Route("/me", me)])
