"""ASGI middleware: the request-body limit and the security headers on every response."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
            "blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
"""The page's Content-Security-Policy: its own files only, no inline script or style; images
from data: (the 28x28 the model saw, the gallery) and blob: (the upload's preview)."""
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
            "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
"""FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from their CDN with an inline
bootstrap script; they alone get this looser policy."""
SECURITY_HEADERS: dict[str, str] = {"X-Content-Type-Options": "nosniff",
                                    "X-Frame-Options": "DENY",
                                    "Referrer-Policy": "no-referrer"}
"""Sent with every response, besides the Content-Security-Policy."""


class BodyLimit:
    """ASGI middleware: 413 once a request body passes ``max_bytes``.

    Counts the bytes as they stream in, so a missing or lying Content-Length changes
    nothing; a declared length over the limit is refused before reading anything.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return (f"request body is larger than {self.max_bytes:,} bytes; send fewer or "
                "smaller files")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._detail()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS and a Content-Security-Policy on every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "").rstrip("/") in ("/docs", "/redoc")
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        extra.append((b"content-security-policy", (DOCS_CSP if docs else PAGE_CSP).encode()))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
