"""The API viewer's data, `/pve-docs/api-viewer/apidoc.js`, as pveproxy serves it.

pveproxy serves `/usr/share/pve-docs/` as static files, without a login (pve-manager
`PVE/Service/pveproxy.pm`: `add_dirs($dirs, '/pve-docs/' => ...)`); pve-docs' Makefile
builds `apidoc.js` by concatenating `apidata.js` (`const apiSchema = <JSON>;`, printed by
`scripts/extractapi.pl`) and the viewer's code, and the gateway reads its schema from it.
The simulator serves it when started with a schema file (`SimulatorOptions.apidoc`), its
bytes put in that wrapper as they are, so a test can serve a garbage or oversized one.

Without one, it answers as pveproxy does on a node without pve-docs: the `/pve-docs/`
directories do not exist, so the request falls through to pve-http-server's
`die "no such file '$path'\\n"`, which `error()` sends as a 500 with that text as reason
and body (pve-http-server `src/PVE/APIServer/AnyEvent.pm`, `handle_request`). Not a 404.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .http11 import REASON_HEADER, reason_header_value

APIDOC_PATH = "/pve-docs/api-viewer/apidoc.js"
_VIEWER = b"\n\nlet method2cmd = {\n    GET: 'get',\n    POST: 'create',\n};\n"
"""A stand-in for the viewer code that follows the array in the real file."""


def apidoc_body(schema: Path) -> bytes:
    """`apidoc.js` around the bytes of `schema` (the JSON array of PVE's API tree)."""
    return b"const apiSchema = " + schema.read_bytes() + b";" + _VIEWER


def add_apidoc_route(app: Starlette, schema: Path | None) -> None:
    """Serve `apidoc.js` from `schema` on `app` (read once, now), or PVE's answer for a
    node without pve-docs when `schema` is None. No token is checked, as for PVE's
    static files."""
    body = apidoc_body(schema) if schema is not None else None
    missing = f"no such file '{APIDOC_PATH}'"

    async def apidoc(request: Request) -> Response:
        if body is None:
            headers = {REASON_HEADER: reason_header_value(missing)}
            return Response(missing.encode(), 500, headers=headers)
        return Response(body, 200, media_type="application/javascript")

    app.router.routes.append(Route(APIDOC_PATH, apidoc, methods=["GET"]))
