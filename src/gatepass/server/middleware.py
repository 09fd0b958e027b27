"""Pure-ASGI middleware (no ``BaseHTTPMiddleware``: it costs a task per request)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = (b"x-content-type-options", b"nosniff")
#: For HTML only: JSON is never rendered as a page, so framing and CSP do not apply.
PAGE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    NOSNIFF,
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null"
    # on our own form posts, which the CSRF check rightly refuses.
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
)


class SecurityHeaders:
    """``nosniff`` on every response; framing, referrer and CSP rules on HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                html = any(
                    name == b"content-type" and value.startswith(b"text/html")
                    for name, value in headers
                )
                message["headers"] = [*headers, *(PAGE_HEADERS if html else (NOSNIFF,))]
            await send(message)

        await self.app(scope, receive, send_with_headers)
