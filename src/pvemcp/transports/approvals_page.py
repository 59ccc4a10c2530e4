"""The approvals web page: a small static page over the HTTP approval API.

`GET /approvals/ui` (with its script and style sheet beside it) needs no token: the page
holds nothing. The approver pastes a bearer token, which the script keeps in memory only
and sends in the `Authorization` header of each API call, so the page's access is exactly
the token's (`approvals_http.py` decides everything). The files are package data in
`approvals_static/`; no inline script or style and no external asset, so the strict
`CONTENT_SECURITY_POLICY` sent with each holds, and every value the API returns is put
in the page as text (a plan is written by an agent and may hold markup).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pvemcp.transports.approvals_http import PREFIX

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = {
    "/ui": ("page.html", "text/html; charset=utf-8"),
    "/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui.css": ("ui.css", "text/css; charset=utf-8"),
}


def page_routes() -> list[Route]:
    """The page's routes, to put before the API's (whose `/approvals/{path}` would take
    them: approval ids are URL-safe base64 of 18 bytes, never `ui`)."""
    folder = files("pvemcp.transports") / "approvals_static"
    return [
        Route(PREFIX + path, _serve(folder.joinpath(name).read_bytes(), kind), methods=["GET"])
        for path, (name, kind) in PAGES.items()
    ]


def _serve(body: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_: Request) -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve
