"""What users write by hand: Starlette plus a minimal PyJWT middleware (pure ASGI).

BENCH_ALG picks HS256 or EdDSA. The key is made at start-up; GET /token hands
out a valid token (bench only).
"""

import os
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ALG = os.environ.get("BENCH_ALG", "HS256")
if ALG == "HS256":
    SIGNING_KEY = VERIFY_KEY = os.urandom(32)
else:
    SIGNING_KEY = Ed25519PrivateKey.generate()
    VERIFY_KEY = SIGNING_KEY.public_key()


class JWTMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/token":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            try:
                if not header.startswith("Bearer "):
                    raise jwt.InvalidTokenError("no bearer")
                scope["claims"] = jwt.decode(
                    header[7:], VERIFY_KEY, algorithms=[ALG], audience="bench", issuer="bench"
                )
            except jwt.InvalidTokenError:
                await JSONResponse({"detail": "unauthorized"}, status_code=401)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


async def me(request: Request) -> JSONResponse:
    claims = request.scope["claims"]
    return JSONResponse({"id": claims["sub"], "roles": claims["roles"], "method": "bearer"})


async def token(request: Request) -> JSONResponse:
    now = int(time.time())
    claims = {
        "iss": "bench",
        "aud": "bench",
        "sub": "u1",
        "iat": now,
        "exp": now + 3600,
        "roles": ["user"],
    }
    return JSONResponse({"access_token": jwt.encode(claims, SIGNING_KEY, algorithm=ALG)})


app = JWTMiddleware(Starlette(routes=[Route("/me", me), Route("/token", token)]))
