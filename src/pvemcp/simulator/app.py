"""The simulator's HTTP face: `/api2/json/...` the way pveproxy answers it.

The order of checks follows pve-http-server: the HTTP method, a body where none belongs,
the API token, then the handler lookup (501), parameter verification (400) and the
handler (200, or its error). Errors carry PVE's message in the JSON body and its first
line as the reason phrase; the 401 and the transport-level 501s have an empty body.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, unquote

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from .endpoints import find_route
from .errors import ApiError, not_implemented, param_error
from .faults import FaultInjector, Faults, admin_route
from .http11 import REASON_HEADER, reason_header_value
from .params import refuse_root_only, validate
from .permissions import check_request
from .router import Context
from .state import ClusterState

API_PREFIX = "/api2/json"
AUTH_SCHEME = "PVEAPIToken="
NO_TICKET = "No ticket"
AUTH_FAILURE = "authentication failure"
LOGIN_PATH = f"{API_PREFIX}/access/ticket"
TICKET_COOKIE = "PVEAuthCookie"
CSRF_HEADER = "CSRFPreventionToken"
DUPLICATE = "duplicate parameter (already defined in URI) with conflicting values!"
_METHODS = ("GET", "POST", "PUT", "DELETE")
_HEADERS = {"server": "pve-api-daemon/3.0", "cache-control": "max-age=0"}


def _bare(status: int, reason: str) -> Response:
    """An answer with an empty body, as pve-http-server sends for 401 and 501."""
    return Response(b"", status, headers={**_HEADERS, REASON_HEADER: reason_header_value(reason)})


def _json(status: int, body: Mapping[str, object], reason: str | None = None) -> Response:
    headers = dict(_HEADERS)
    if reason is not None:
        headers[REASON_HEADER] = reason_header_value(reason)
    return Response(
        json.dumps(body, separators=(",", ":")),
        status,
        headers=headers,
        media_type="application/json;charset=UTF-8",
    )


def _error(err: ApiError) -> Response:
    body: dict[str, object] = {"data": None, "message": err.message}
    if err.errors:
        body["errors"] = err.errors
    return _json(err.status, body, err.reason)


def _collect(pairs: list[tuple[str, str]]) -> dict[str, object]:
    """Query or form pairs; a repeated key becomes a list, as in PVE."""
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            previous = found[key]
            found[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            found[key] = value
    return found


def _body_params(request: Request, body: bytes) -> dict[str, object]:
    if not body:
        return {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, f"unable to parse JSON body - {exc}") from exc
        if not isinstance(decoded, dict):
            raise ApiError(400, "JSON body is not an object")
        return {str(key): value for key, value in decoded.items()}
    return _collect(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _merge(
    path_params: Mapping[str, str], body: Mapping[str, object], query: Mapping[str, object]
) -> dict[str, object]:
    """Body, then query on top, then the path; a conflicting duplicate of a path value is 400."""
    merged: dict[str, object] = {**body, **query}
    conflicts = {
        name: DUPLICATE
        for name, value in path_params.items()
        if name in merged and str(merged[name]) != value
    }
    if conflicts:
        raise param_error(conflicts)
    merged.update(path_params)
    return merged


def _ticket_user(state: ClusterState, request: Request) -> str | None:
    """The user of a `PVEAuthCookie` ticket from `POST /access/ticket`; a request that is
    not a GET must also carry the ticket's `CSRFPreventionToken` header, as pve-http-server
    demands of cookie-authenticated requests."""
    with state.lock:
        found = state.access.tickets.get(request.cookies.get(TICKET_COOKIE, ""))
    if found is None:
        return None
    userid, csrf = found
    if request.method != "GET" and not hmac.compare_digest(
        request.headers.get(CSRF_HEADER, ""), csrf
    ):
        return None
    return userid


def create_app(
    state: ClusterState,
    token_id: str,
    token_secret: str,
    auth_fail_delay: float = 0.0,
    *,
    faults: Faults | None = None,
    fault_admin: bool = False,
) -> Starlette:
    """The ASGI app serving `state`: the gateway's API token `token_id`=`token_secret`, and
    any token the access store holds (made through `/access/users/{userid}/token`), each
    checked against the method's PVE permissions (`permissions.check_request`).

    With `faults`, requests they match get a faulted answer (`faults.py`; the app must then
    run on `faults.FaultH11Protocol`); `fault_admin` also serves their admin endpoint to
    the holder of `token_id`."""
    expected = f"{token_id}={token_secret}".encode()

    def authenticated(header: str | None) -> str | None:
        """The token id the header proves, or None (pve-access-control's
        `verify_token`: the token exists, its secret matches, its user is enabled)."""
        if header is None or not header.startswith(AUTH_SCHEME):
            return None
        given = header[len(AUTH_SCHEME) :]
        if hmac.compare_digest(given.encode(), expected):
            return token_id
        tokenid, _, secret = given.partition("=")
        with state.lock:
            token = state.access.token(tokenid)
            user = state.access.users.get(tokenid.partition("!")[0])
            if token is None or user is None or not user.enable:
                return None
            return tokenid if hmac.compare_digest(secret, token.secret) else None

    async def api(request: Request) -> Response:
        method = request.method
        if method not in _METHODS:
            return _bare(501, f"method '{method}' not available")
        body = await request.body()
        if body and method in ("GET", "DELETE"):
            return _bare(501, "Unexpected content")
        header = request.headers.get("authorization")
        auth = authenticated(header) if header is not None else _ticket_user(state, request)
        if auth is None and method == "POST" and request.url.path == LOGIN_PATH:
            auth = ""  # the login itself needs no ticket (its permissions: user => 'world')
        if auth is None:
            if auth_fail_delay > 0:
                await anyio.sleep(auth_fail_delay)
            no_ticket = header is None and TICKET_COOKIE not in request.cookies
            return _bare(401, NO_TICKET if no_ticket else AUTH_FAILURE)
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        relative = raw_path.decode("latin-1")[len(API_PREFIX) :]
        segments = [unquote(part) for part in relative.split("/") if part]
        try:
            found = find_route(method, segments)
            if found is None:
                raise not_implemented(method, "/" + "/".join(segments))
            route, path_params = found
            query = _collect(parse_qsl(request.url.query, keep_blank_values=True))
            raw = _merge(path_params, _body_params(request, body), query)
            # pve-manager's HTTPServer.pm rest_handler checks permissions on the raw
            # parameters, before the handler verifies them. The guests go as a view, read
            # under the lock only if a check needs them (root's never does), not copied
            # on every request.
            with state.lock:
                check_request(
                    state.access,
                    auth,
                    state.guests.values(),
                    method=method,
                    template=route.path,
                    params=raw,
                )
            values = validate(route.params, raw)
            refuse_root_only(route.params, values, auth)
            with state.lock:
                now = state.advance()
                result = route.handler(Context(state, auth, now), values)
        except ApiError as err:
            return _error(err)
        answer: dict[str, object] = {"data": result.data}
        if result.total is not None:
            answer["total"] = result.total
        if result.changes is not None:
            answer["changes"] = result.changes
        return _json(200, answer)

    def admin(header: str | None) -> bool:
        return authenticated(header) == token_id

    return _starlette(api, faults, admin_route(faults, admin) if faults and fault_admin else None)


def _starlette(
    api: Callable[[Request], Awaitable[Response]],
    faults: Faults | None,
    admin: StarletteRoute | None,
) -> Starlette:
    """The app: every method on `/api2/json/...` to `api` (it answers PVE's 501 itself),
    the fault admin endpoint if given, and the fault middleware if there are `faults`."""
    methods = [*_METHODS, "PATCH", "OPTIONS", "HEAD"]
    routes = [StarletteRoute(API_PREFIX + "/{path:path}", api, methods=methods)]
    if admin is not None:
        routes.append(admin)
    if faults is None:
        return Starlette(routes=routes)
    return Starlette(routes=routes, middleware=[Middleware(FaultInjector, faults=faults)])
