"""Finding and explaining API methods for an agent, from the structural index alone.

The index keeps no Proxmox prose, so a search matches words against what it does keep:
path segments, parameter names and PVE's method names (`update_vm`), with a few words an
operator uses for them (`vm` is `qemu`, `container` is `lxc`, `set` is a PUT or POST).
What a method is shown as is structural too: its parameters with types and constraints,
what it returns, the permission PVE checks, whether it starts a task. Both stay small
(a few hundred tokens): rows and parameters are capped, and the answer says how many
were left out and how to ask for them. An index built from a node's own schema
(`node.py`) has descriptions: describe shows them cut short; search does not use them, so
it ranks alike whichever schema answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pvemcp.pveapi.index import Endpoint, Index

SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "vm": ("qemu",),
    "vms": ("qemu",),
    "virtual": ("qemu",),
    "machine": ("qemu",),
    "container": ("lxc",),
    "containers": ("lxc",),
    "ct": ("lxc",),
    "guest": ("qemu", "lxc"),
    "guests": ("qemu", "lxc"),
    "snapshot": ("snapshot",),
    "settings": ("config",),
    "configuration": ("config",),
    "options": ("config", "options"),
    "disk": ("disk", "disks"),
    "backup": ("vzdump", "backup"),
    "user": ("users", "userid"),
    "group": ("groups", "groupid"),
    "permission": ("acl", "permissions"),
    "permissions": ("acl", "permissions"),
    "task": ("tasks", "upid"),
    "log": ("log", "syslog", "journal"),
    "note": ("description", "notes"),
    "notes": ("description", "notes"),
    "comment": ("comment", "description"),
    "rename": ("name", "hostname"),
}
"""Operator words and the index words they stand for (path segments, parameter names)."""

VERBS: Mapping[str, tuple[str, ...]] = {
    "get": ("GET",),
    "read": ("GET",),
    "list": ("GET",),
    "show": ("GET",),
    "status": ("GET",),
    "set": ("PUT", "POST"),
    "change": ("PUT", "POST"),
    "update": ("PUT", "POST"),
    "edit": ("PUT", "POST"),
    "modify": ("PUT", "POST"),
    "configure": ("PUT", "POST"),
    "create": ("POST",),
    "add": ("POST",),
    "new": ("POST",),
    "start": ("POST",),
    "stop": ("POST",),
    "delete": ("DELETE",),
    "remove": ("DELETE",),
    "destroy": ("DELETE",),
    "rename": ("PUT", "POST"),
}
"""Words that say which HTTP method a searcher wants; the first is the likelier one."""

STOP = frozenset(
    {
        *("a", "an", "and", "are", "can", "do", "does", "for", "from", "how", "i", "in"),
        *("is", "it", "its", "my", "of", "on", "or", "s", "the", "to", "what", "with"),
    }
)
_WORD = re.compile(r"[a-z0-9][a-z0-9_-]*")

SEARCH_LIMIT = 8
PARAM_LIMIT = 16
KEYS_SHOWN = 8
TEXT_CHARS = 300
"""The longest method description shown (a node's own schema has them; see `node.py`)."""
PARAM_TEXT_CHARS = 60
"""The longest parameter description shown after its type."""
_SPACE = re.compile(r"\s+")


def cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis says it was cut)."""
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _words(query: str) -> list[str]:
    return [word for word in _WORD.findall(query.lower()) if word not in STOP]


def _parts(endpoint: Endpoint) -> tuple[list[str], set[str], set[str]]:
    """An endpoint's literal path segments, its names (path variables and parameters,
    `net[n]` as `net`) and the keys of its property strings (`bridge`, `discard`)."""
    literals = [part for part in endpoint.template.split("/") if part and part[0] != "{"]
    names = {part.strip("{}") for part in endpoint.template.split("/") if part[:1] == "{"}
    names |= {name.replace("[n]", "") for name in endpoint.properties}
    keys = {
        key
        for prop in endpoint.properties.values()
        if isinstance(prop.get("format"), Mapping)
        for key in prop["format"]
    }
    return literals, names, keys


def _forms(word: str) -> tuple[str, ...]:
    """A query word and what it may stand for: synonyms, and `net0` as `net`."""
    base = word.rstrip("0123456789")
    extra = (base,) if base and base != word else ()
    return (word, *extra, *SYNONYMS.get(word, ()))


def _score(endpoint: Endpoint, words: list[str]) -> float:
    """How well `endpoint` fits the query's `words`: each word counts where it is found
    (a literal path segment most, the last one more; a path variable or parameter; the
    method's name; a property-string key), a verb by the method it implies."""
    literals, names, keys = _parts(endpoint)
    method_words = endpoint.name.lower().split("_")
    score = 0.0
    said = {form for word in words for form in _forms(word)}
    for word in words:
        verbs = VERBS.get(word)
        if verbs is not None:
            if endpoint.method in verbs:
                score += 1.0 if endpoint.method == verbs[0] else 0.5
            if word in literals:
                score += 0.5
            if word not in SYNONYMS:
                continue
        best = 0.0
        for form in _forms(word)[1:] if verbs is not None else _forms(word):
            if form in literals:
                # The last segment is what the method is about (said, not implied).
                best = max(best, 3.5 if form == word == literals[-1] else 3.0)
            elif form in names:
                best = max(best, 2.0)
            elif form in method_words:
                best = max(best, 1.5)
            elif form in keys or (len(form) >= 3 and any(form in p for p in literals)):
                best = max(best, 1.0)
            elif len(form) >= 3 and any(form in name for name in names):
                best = max(best, 0.5)
        score += best
    if not score:
        return 0.0
    # Among equals, the path with fewer segments nobody asked for is the one meant.
    unasked = sum(1 for part in literals if part not in said)
    return score - unasked * 0.2 - len(endpoint.template.split("/")) * 0.01


def search(index: Index, query: str, limit: int = SEARCH_LIMIT) -> tuple[list[Endpoint], int]:
    """The methods that best fit `query` (words, path fragments, parameter names), best
    first, at most `limit`; and how many fitted in all. A path fragment (`/qemu/`)
    counts by its segments like any other word."""
    words = _words(query)
    scored = [(score, endpoint) for endpoint in index if (score := _score(endpoint, words)) > 0]
    if not scored:
        return [], 0
    top = max(score for score, _ in scored)
    # Only methods matching a fair share of what the best one matched are worth a row.
    fitting = [(s, e) for s, e in scored if s >= top * 0.5]
    fitting.sort(key=lambda item: (-item[0], item[1].template, item[1].method))
    return [endpoint for _, endpoint in fitting[:limit]], len(fitting)


def param_text(name: str, schema: Mapping[str, Any]) -> str:
    """One parameter's type and constraints in a few words: `integer 100..999999999`,
    `string <=8192 chars`, `enum other|l26|...`, `property string: size,discard,...`."""
    if isinstance(schema.get("alias"), str):
        return f"alias of {schema['alias']}"
    kind = str(schema.get("type", "any"))
    parts = [kind]
    enum = schema.get("enum")
    if isinstance(enum, list):
        shown = [str(option) for option in enum[:KEYS_SHOWN]]
        parts = [f"enum {'|'.join(shown)}{'|...' if len(enum) > KEYS_SHOWN else ''}"]
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        parts.append(f"{'' if low is None else low}..{'' if high is None else high}")
    if schema.get("maxLength") is not None:
        parts.append(f"<={schema['maxLength']} chars")
    fmt = schema.get("format")
    if isinstance(fmt, Mapping):
        keys = [key for key, sub in fmt.items() if not sub.get("alias")]
        default = next((key for key, sub in fmt.items() if sub.get("default_key")), None)
        listed = ",".join(keys[:KEYS_SHOWN]) + (",..." if len(keys) > KEYS_SHOWN else "")
        parts = [f"property string ({default or 'key'}=...): {listed}"]
    elif isinstance(fmt, str):
        parts.append(f"format {fmt}")
    if isinstance(schema.get("pattern"), str):
        parts.append("pattern")
    if "default" in schema:
        parts.append(f"default {schema['default']}")
    if not schema.get("optional") and "[n]" not in name:
        parts.append("required")
    return ", ".join(parts)


def returns_text(returns: Mapping[str, Any], upid: bool) -> str:
    """What a method answers, in a few words: `task (UPID)`, `null`, `object: a,b,c`,
    `array of object: vmid,name,...`."""
    if upid:
        return "task (UPID string): wait for it with the task tools"
    kind = str(returns.get("type", "null"))
    inner = returns
    if kind == "array" and isinstance(returns.get("items"), Mapping):
        inner = returns["items"]
        kind = f"array of {inner.get('type', 'any')}"
    props = inner.get("properties")
    if isinstance(props, Mapping) and props:
        names = list(props)
        shown = ",".join(names[:12]) + (",..." if len(names) > 12 else "")
        return f"{kind}: {shown}"
    return kind


def permission_text(permissions: Mapping[str, Any] | None) -> str:
    """PVE's permission check of a method, compact: `perm /vms/{vmid} VM.Config.Options`,
    `any user`, or `root@pam only` (a method without one)."""
    if permissions is None:
        return "root@pam only"
    if permissions.get("user") == "all" and "check" not in permissions:
        return "any authenticated user (the method checks further itself)"
    check = permissions.get("check")
    if isinstance(check, list):
        return _check_text(check)
    return json.dumps(permissions, separators=(",", ":"))[:200]


def _check_text(check: list[Any]) -> str:
    if not check:
        return ""
    head = check[0]
    if head == "perm" and len(check) >= 3:
        privs = check[2] if isinstance(check[2], list) else [check[2]]
        joined = " or " if "any" in check[3:] else " and "
        return f"{check[1]} {joined.join(str(p) for p in privs)}"
    if head in ("and", "or"):
        return f" {head} ".join(f"({_check_text(part)})" for part in check[1:] if part)
    return " ".join(str(part) for part in check if not isinstance(part, list | dict))


def _with_text(shown: str, schema: Mapping[str, Any]) -> str:
    """A parameter's structural text, and its description when the schema has one."""
    text = schema.get("description")
    return f"{shown}; {cut(text, PARAM_TEXT_CHARS)}" if isinstance(text, str) and text else shown


def describe(
    endpoint: Endpoint,
    *,
    match: str | None = None,
    limit: int = PARAM_LIMIT,
    covered_by: Iterable[str] = (),
    tier: str,
) -> dict[str, Any]:
    """One method, structurally: parameters (those whose name contains `match`, or the
    required ones first then the others, at most `limit`), what it returns, the permission
    PVE checks, whether it is a task, its tier and the typed tools that send it; with the
    node's descriptions, cut short, when its index has them."""
    props = endpoint.properties
    names = sorted(props, key=lambda n: (bool(props[n].get("optional")), n))
    if match:
        wanted = match.lower()
        names = [name for name in names if wanted in name.lower()]
    shown = {name: _with_text(param_text(name, props[name]), props[name]) for name in names[:limit]}
    described: dict[str, Any] = {
        "method": endpoint.method,
        "path": endpoint.template,
        "name": endpoint.name,
        "tier": tier,
        "params": shown,
        "params_total": len(props),
        "returns": returns_text(endpoint.returns, endpoint.upid),
        "permission": permission_text(endpoint.permissions),
        "task": endpoint.upid,
    }
    if endpoint.description:
        described["description"] = cut(endpoint.description, TEXT_CHARS)
    if len(names) > limit:
        described["params_more"] = len(names) - limit
    covering = sorted(covered_by)
    if covering:
        described["typed_tools"] = covering
    return described
