"""Notifications: endpoints (sendmail, gotify, smtp, webhook), matchers and targets.

Follows pve-manager `PVE/API2/Cluster/Notifications.pm`, which hands every call to
proxmox-notify (`proxmox-notify/src/api/*.rs`, through `PVE::RS::Notify`): one section
config, `/etc/pve/notifications.cfg`, its secrets in `priv/notifications.cfg`. What a
GET never returns is PVE's too: a gotify `token`, an smtp `password`, a webhook's
secret values (only their names: `name=<name>`).

Where the simulator is simpler than PVE (said here once):
- Nothing is ever sent over the network: a test (`POST targets/{name}/test`) is recorded
  in `Notify.sent` (what a test reads back), whatever the endpoint's type.
- The words of proxmox-notify's refusals are from memory of its api module
  (`ensure_unique`, `ensure_safe_to_delete`, the `... not found` lookups), not checked
  against a node: unsure of the exact text. Matcher fields, calendar and the
  `matcher-fields`/`matcher-field-values` helpers are not simulated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, check_digest
from .router import Context, Params, Result, Route, api, text

TYPES = ("sendmail", "gotify", "smtp", "webhook")
SECRETS: dict[str, tuple[str, ...]] = {"gotify": ("token",), "smtp": ("password",),
                                       "webhook": ("secret",)}  # fmt: skip
"""Per endpoint type, the options kept in the private config and never answered."""
_NOT_OPTIONS = ("name", "delete", "digest")


@dataclass
class Notify:
    """The notification config: endpoints and matchers by name, and the tests sent."""

    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    """name -> options, with `type` and `origin`."""
    matchers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every test notification: target, type, user, time."""

    def digest(self) -> str:
        body = json.dumps([self.endpoints, self.matchers], sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()


def demo_notify() -> Notify:
    """PVE's built-in pair: the sendmail endpoint `mail-to-root` and `default-matcher`
    sending everything to it."""
    return Notify(
        endpoints={"mail-to-root": {"type": "sendmail", "origin": "builtin",
                                    "mailto-user": ["root@pam"],
                                    "comment": "Send mails to root@pam's email address"}},
        matchers={"default-matcher": {"origin": "builtin", "mode": "all",
                                      "target": ["mail-to-root"],
                                      "comment": "Route all notifications to mail-to-root"}},
    )  # fmt: skip


def listed(value: object) -> list[str]:
    """An array parameter's values (one given alone arrives as a plain value)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _shown(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as GET answers it: no secret values, a webhook's secret names only."""
    kind = str(options["type"])
    view = {"name": name, **{k: v for k, v in options.items() if k != "type"}}
    for key in SECRETS.get(kind, ()):
        view.pop(key, None)
    if kind == "webhook" and options.get("secret"):
        view["secret"] = [str(s).split(",", 1)[0] for s in options["secret"]]
    return view


def _endpoint(ctx: Context, kind: str, name: str) -> dict[str, Any]:
    found = ctx.state.notify.endpoints.get(name)
    if found is None or found["type"] != kind:
        raise ApiError(404, f"endpoint '{name}' not found")
    return found


def _unique(ctx: Context, name: str) -> None:
    notify = ctx.state.notify
    if name in notify.endpoints or name in notify.matchers:
        raise ApiError(400, f"Cannot create '{name}', an entity with the same name already exists")


def _changed(options: dict[str, Any], params: Params) -> dict[str, Any]:
    """`options` with PUT's values set and its `delete` keys removed; a built-in entry
    becomes `modified-builtin`."""
    updated = dict(options)
    for key in listed(params.get("delete")):
        updated.pop(str(key), None)
    updated.update({k: v for k, v in params.items() if k not in _NOT_OPTIONS})
    if updated.get("origin") == "builtin":
        updated["origin"] = "modified-builtin"
    return updated


def _webhook_secrets(old: list[str], new: list[str]) -> list[str]:
    """A PUT names secrets; one given without a value keeps its stored value (proxmox-notify
    `update_endpoint` for webhooks)."""
    kept = {s.split(",", 1)[0]: s for s in old}
    return [s if "value=" in s else kept.get(s.split(",", 1)[0], s) for s in new]


def endpoint_routes(kind: str) -> list[Route]:
    base = f"/cluster/notifications/endpoints/{kind}"

    def listing(ctx: Context, params: Params) -> Result:
        return Result([_shown(n, o) for n, o in sorted(ctx.state.notify.endpoints.items())
                       if o["type"] == kind])  # fmt: skip

    def read(ctx: Context, params: Params) -> Result:
        name = text(params, "name")
        view = _shown(name, _endpoint(ctx, kind, name))
        view.pop("origin", None)
        return Result({**view, "digest": ctx.state.notify.digest()})

    def create(ctx: Context, params: Params) -> Result:
        name = text(params, "name")
        _unique(ctx, name)
        options = {k: v for k, v in params.items() if k not in _NOT_OPTIONS}
        ctx.state.notify.endpoints[name] = {"type": kind, "origin": "user-created", **options}
        return Result(None)

    def update(ctx: Context, params: Params) -> Result:
        name = text(params, "name")
        options = _endpoint(ctx, kind, name)
        check_digest(params.get("digest"), ctx.state.notify.digest())
        updated = _changed(options, params)
        if kind == "webhook" and "secret" in params:
            updated["secret"] = _webhook_secrets(list(options.get("secret", [])),
                                                 listed(params["secret"]))  # fmt: skip
        ctx.state.notify.endpoints[name] = updated
        return Result(None)

    def delete(ctx: Context, params: Params) -> Result:
        name = text(params, "name")
        _endpoint(ctx, kind, name)
        users = sorted(
            m for m, o in ctx.state.notify.matchers.items() if name in o.get("target", [])
        )
        if users:
            raise ApiError(400, f"cannot delete '{name}', referenced by: {', '.join(users)}")
        del ctx.state.notify.endpoints[name]
        return Result(None)

    return [
        api("GET", base, listing),
        api("POST", base, create),
        api("GET", base + "/{name}", read),
        api("PUT", base + "/{name}", update),
        api("DELETE", base + "/{name}", delete),
    ]


def _check_targets(ctx: Context, targets: list[str]) -> None:
    for target in targets:
        if target not in ctx.state.notify.endpoints:
            raise ApiError(400, f"target '{target}' does not exist")


def _matcher(ctx: Context, name: str) -> dict[str, Any]:
    found = ctx.state.notify.matchers.get(name)
    if found is None:
        raise ApiError(404, f"matcher '{name}' not found")
    return found


def _matchers(ctx: Context, params: Params) -> Result:
    return Result([{"name": n, **o} for n, o in sorted(ctx.state.notify.matchers.items())])


def _matcher_read(ctx: Context, params: Params) -> Result:
    name = text(params, "name")
    view = {"name": name, **_matcher(ctx, name), "digest": ctx.state.notify.digest()}
    view.pop("origin", None)
    return Result(view)


def _matcher_create(ctx: Context, params: Params) -> Result:
    name = text(params, "name")
    _unique(ctx, name)
    options = {k: v for k, v in params.items() if k not in _NOT_OPTIONS}
    _check_targets(ctx, listed(options.get("target")))
    ctx.state.notify.matchers[name] = {"origin": "user-created", **options}
    return Result(None)


def _matcher_update(ctx: Context, params: Params) -> Result:
    name = text(params, "name")
    options = _matcher(ctx, name)
    check_digest(params.get("digest"), ctx.state.notify.digest())
    updated = _changed(options, params)
    _check_targets(ctx, [str(t) for t in updated.get("target", [])])
    ctx.state.notify.matchers[name] = updated
    return Result(None)


def _matcher_delete(ctx: Context, params: Params) -> Result:
    name = text(params, "name")
    _matcher(ctx, name)
    del ctx.state.notify.matchers[name]
    return Result(None)


def _targets(ctx: Context, params: Params) -> Result:
    """Every endpoint as a target (`get_targets`): name, type, comment, disable, origin."""
    keys = ("comment", "disable", "origin")
    return Result([
        {"name": n, "type": o["type"], **{k: o[k] for k in keys if k in o}}
        for n, o in sorted(ctx.state.notify.endpoints.items())
    ])  # fmt: skip


def _test(ctx: Context, params: Params) -> Result:
    """`test_target`: a test notification through the target (recorded, never sent)."""
    name = text(params, "name")
    found = ctx.state.notify.endpoints.get(name)
    if found is None:
        raise ApiError(404, f"target '{name}' does not exist")
    ctx.state.notify.sent.append({"target": name, "type": found["type"], "user": ctx.user,
                                  "at": int(ctx.now)})  # fmt: skip
    return Result(None)


def _index(ctx: Context, params: Params) -> Result:
    return Result([{"name": n} for n in ("endpoints", "matchers", "targets")])


def _endpoint_index(ctx: Context, params: Params) -> Result:
    return Result([{"name": kind} for kind in TYPES])


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/notifications", _index),
    api("GET", "/cluster/notifications/endpoints", _endpoint_index),
    *(route for kind in TYPES for route in endpoint_routes(kind)),
    api("GET", "/cluster/notifications/targets", _targets),
    api("POST", "/cluster/notifications/targets/{name}/test", _test),
    api("GET", "/cluster/notifications/matchers", _matchers),
    api("POST", "/cluster/notifications/matchers", _matcher_create),
    api("GET", "/cluster/notifications/matchers/{name}", _matcher_read),
    api("PUT", "/cluster/notifications/matchers/{name}", _matcher_update),
    api("DELETE", "/cluster/notifications/matchers/{name}", _matcher_delete),
)
