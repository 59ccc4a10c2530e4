"""Policy rules, compiled: who they apply to, which tools, and which targets and arguments.

A rule is checked on every call, so everything that can be worked out once (selectors,
vmid ranges, path globs split into components) is parsed when the rule is built. The
parsers raise `ValueError` with a message fit for a policy author; the loader turns those
into file-and-line errors.

Matching is fail-safe in two ways. A target constraint never matches an attribute the
request does not carry (unknown is not a match), and constraints on several values are
read the strict way for the effect: a grant must cover *every* path or host a call
touches, a deny or confirm fires on *any* of them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

from pvemcp.policy.decision import Effect
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier

if TYPE_CHECKING:
    from pvemcp.policy.engine import PolicyRequest

SelectorKind = Literal["any", "local", "sub", "group", "scope", "client"]
_PREFIXED: tuple[SelectorKind, ...] = ("sub", "group", "scope", "client")
_EXPLICIT = frozenset({"local", "sub", "group", "client"})
_GLOB_CHARS = frozenset("*?[")
VMID_MIN, VMID_MAX = 100, 999_999_999
_RANGE_RE = re.compile(r"^(\d{1,9})-(\d{1,9})$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
PATH_GLOB_PREFIX = "path:"
"""Marks an argv pattern token as a path glob (`path:/nodes/**`); other tokens are literal."""


def _printable(text: str) -> bool:
    return bool(text) and text.isprintable() and text == text.strip()


@dataclass(frozen=True, slots=True)
class Selector:
    """One subject selector: `*`, `local`, `sub:NAME`, `group:NAME`, `scope:NAME`, `client:ID`.

    `explicit` selectors name a caller (or a group of named callers); only they can grant
    `escape`. `*` and scopes cannot: a scope is what a token may ask for, not who holds it.
    """

    kind: SelectorKind
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Selector:
        if text == "*":
            return cls("any")
        if text == "local":
            return cls("local")
        prefix, sep, value = text.partition(":")
        for kind in _PREFIXED:
            if sep and prefix == kind and _printable(value):
                return cls(kind, value)
        raise ValueError(
            f"{text!r} is not a subject selector; use sub:NAME, group:NAME, scope:NAME, "
            "client:ID, local or *"
        )

    @property
    def explicit(self) -> bool:
        return self.kind in _EXPLICIT

    def matches(self, principal: Principal) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "local":
            return principal.is_local
        if self.kind == "sub":
            return principal.subject == self.value
        if self.kind == "group":
            return self.value in principal.groups
        if self.kind == "scope":
            return self.value in principal.scopes
        return principal.client_id == self.value

    def __str__(self) -> str:
        if self.kind == "any":
            return "*"
        if self.kind == "local":
            return "local"
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class VmidRange:
    """An inclusive range of guest ids; a single vmid is a range of one."""

    low: int
    high: int

    @classmethod
    def parse(cls, item: object) -> VmidRange:
        """`150` or `"100-199"`; both ends within PVE's vmid limits."""
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and (found := _RANGE_RE.match(item)):
            low, high = int(found[1]), int(found[2])
        else:
            raise ValueError(f"{item!r} is not a vmid: use an integer (150) or a range ('100-199')")
        if not VMID_MIN <= low <= high <= VMID_MAX:
            raise ValueError(
                f"{item!r} is not a vmid range within {VMID_MIN}-{VMID_MAX} with low <= high"
            )
        return cls(low, high)

    def __contains__(self, vmid: int) -> bool:
        return self.low <= vmid <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_argv_pattern(tokens: list[str]) -> tuple[str, ...]:
    """Check an argv pattern: a literal program, then literals, `*` (one token),
    `path:GLOB` (one canonical absolute path, matched as `paths` globs are) and `**`
    (the rest)."""
    if not tokens:
        raise ValueError("an argv pattern needs at least the program name")
    if tokens[0] in ("*", "**") or tokens[0].startswith(PATH_GLOB_PREFIX):
        raise ValueError("an argv pattern must start with a literal program name, not a wildcard")
    for position, word in enumerate(tokens):
        if not word or not word.isprintable():
            raise ValueError(f"argv token {position} must be non-empty printable text")
        if word == "**" and position != len(tokens) - 1:
            raise ValueError("'**' (the rest of the arguments) may only be the last token")
        if word.startswith(PATH_GLOB_PREFIX):
            try:
                _token_glob(word)
            except ValueError as exc:
                raise ValueError(f"argv token {position}: {exc}") from None
    return tuple(tokens)


@functools.lru_cache(maxsize=1024)
def _token_glob(word: str) -> tuple[str, ...]:
    """The glob of a `path:` token, split once (patterns are few, matched on every call)."""
    return parse_path_glob(word.removeprefix(PATH_GLOB_PREFIX))


def _token_matches(word: str, arg: str, operands_only: bool) -> bool:
    """One argv token against one pattern token (not `**`)."""
    if word == "*":
        return bool(arg) and (operands_only or not arg.startswith("-"))
    if word.startswith(PATH_GLOB_PREFIX):
        # Only a canonical absolute path can match: `/nodes/../access`, `/nodes//x` or
        # `/nodes/x/` never do, whatever the program would make of them.
        parts = split_path(arg)
        return parts is not None and path_matches(_token_glob(word), parts)
    return arg == word


def argv_matches(pattern: tuple[str, ...], argv: tuple[str, ...]) -> bool:
    """Whether `argv` fits `pattern` token by token.

    Wildcards match operands, never options: `*` and `**` skip a token that starts with
    `-` unless the pattern has already passed a literal `--` (after which the command reads
    everything as operands). An option is allowed only when the pattern spells it out, so
    a rule for `qm status *` cannot be stretched to `qm status --help` or `-x`. A
    `path:/nodes/**` token matches one canonical absolute path, component by component.
    """
    operands_only = False
    for position, word in enumerate(pattern):
        if word == "**":
            rest = argv[position:]
            return operands_only or not any(arg.startswith("-") for arg in rest)
        if position >= len(argv) or not _token_matches(word, argv[position], operands_only):
            return False
        operands_only = operands_only or word == "--"
    return len(argv) == len(pattern)


def split_path(path: str) -> tuple[str, ...] | None:
    """The components of a canonical absolute path, or None if it is not canonical.

    Canonical means what `realpath` returns: absolute, no `.`/`..`/empty components, no
    trailing slash, no NUL. Policy never resolves paths itself; a tool must, and a path that
    is not canonical is refused rather than guessed at.
    """
    if path == "/":
        return ()
    if not path.startswith("/") or "\0" in path:
        return None
    parts = tuple(path[1:].split("/"))
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def parse_path_glob(glob: str) -> tuple[str, ...]:
    """A path glob as components: `*`/`?`/`[...]` within one component, `**` for any depth."""
    parts = split_path(glob)
    if parts is None:
        raise ValueError(
            f"{glob!r} is not an absolute canonical path glob (no '..', '.', '//' or trailing /)"
        )
    for part in parts:
        if "**" in part and part != "**":
            raise ValueError(f"{glob!r}: '**' must be a whole path component, as in /etc/pve/**")
    return parts


def path_matches(glob: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Component-wise match, so `/etc/pve/**` covers `/etc/pve/x` but not `/etc/pve-evil/x`."""
    if not glob:
        return not path
    head, rest = glob[0], glob[1:]
    if head == "**":
        return any(path_matches(rest, path[skip:]) for skip in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and path_matches(rest, path[1:])


API_METHODS = ("GET", "POST", "PUT", "DELETE")
ApiRef = tuple[str, str, str | None]
"""An API request as policy sees it: method, the API's path template
(`/nodes/{node}/qemu/{vmid}/migrate`) and the concrete path when known."""
ApiPattern = tuple[str, tuple[str, ...]]
"""A compiled `api` pattern: a method (or `*`) and a path glob's components."""


def parse_api_pattern(text: str) -> ApiPattern:
    """`POST /nodes/*/qemu/*/migrate`: a method (`*` for any) and a path glob, matched by
    component as `paths` globs are (`*` one segment, `**` any depth)."""
    method, space, glob = text.partition(" ")
    if not space or (method != "*" and method not in API_METHODS):
        raise ValueError(
            f"{text!r} is not an API pattern: write a method ({', '.join(API_METHODS)} or *), "
            "a space and a path glob, as in 'POST /nodes/*/qemu/*/migrate'"
        )
    return method, parse_path_glob(glob.strip())


def api_matches(pattern: ApiPattern, ref: ApiRef) -> bool:
    """Whether a request fits a pattern: its method, and its path template or its concrete
    path (a literal node name in the pattern matches that node's calls only)."""
    method, glob = pattern
    if method not in ("*", ref[0]):
        return False
    for path in (ref[1], ref[2]):
        parts = split_path(path) if path is not None else None
        if parts is not None and path_matches(glob, parts):
            return True
    return False


def canonical_host(host: str) -> str | None:
    """A host name lowercased without its trailing dot, or None if it is not a DNS name."""
    name = host.lower().removesuffix(".")
    return name if _HOST_RE.match(name) else None


def parse_host_pattern(pattern: str) -> str:
    """`example.com` (exactly that host) or `*.example.com` (any subdomain, not the apex)."""
    base = pattern.removeprefix("*.")
    name = canonical_host(base)
    if name is None or "*" in base:
        raise ValueError(f"{pattern!r} is not a host name or '*.' followed by a host name")
    return pattern[: len(pattern) - len(base)] + name


def host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


@dataclass(frozen=True, slots=True)
class Match:
    """A rule's subject and tool matched.

    `missing` holds the constrained attributes the request did not carry: empty means the
    rule matches; otherwise it would match only if those turned out to fit. `explicit`
    says whether the caller was matched by an explicit selector (see `Selector`).
    """

    missing: frozenset[str]
    explicit: bool


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule. `None` for a constraint means "any"; lists are any-of."""

    id: str
    effect: Effect
    subjects: tuple[Selector, ...]
    description: str = ""
    tools: tuple[str, ...] | None = None
    tiers: frozenset[Tier] | None = None
    clusters: frozenset[str] | None = None
    nodes: frozenset[str] | None = None
    vmids: tuple[VmidRange, ...] | None = None
    pools: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    """Stored casefolded: PVE compares tags case-insensitively by default."""
    argv: tuple[tuple[str, ...], ...] | None = None
    paths: tuple[tuple[str, ...], ...] | None = None
    hosts: tuple[str, ...] | None = None
    api: tuple[ApiPattern, ...] | None = None
    tasks: bool = False
    """`tasks = "any"`: an allow rule that counts only for a call on a task another caller
    started (`PolicyRequest.others_task`), and for nothing else."""
    approvers: tuple[Selector, ...] = ()
    """An approve rule's approvers: who may let the held call run (never its requester)."""

    def __post_init__(self) -> None:
        if self.tags is not None:
            object.__setattr__(self, "tags", frozenset(tag.casefold() for tag in self.tags))

    @property
    def conditional(self) -> bool:
        """Whether the rule depends on the target or arguments, not only on who and what."""
        return any(getattr(self, name) is not None for _, name, _ in _CONSTRAINTS)

    @property
    def any_subject(self) -> bool:
        return any(selector.kind == "any" for selector in self.subjects)

    def names_escape(self, tool: str) -> bool:
        """Whether the rule names `tool` literally (not by a glob) or the `escape` tier."""
        return (self.tiers is not None and Tier.ESCAPE in self.tiers) or (
            self.tools is not None and tool in self.tools
        )

    def grants_escape(self, tool: str, match: Match) -> bool:
        """An allow rule counts for an escape-tier tool only if it names the tool or tier and
        matched the caller by an explicit selector, with no `*` among its subjects."""
        return match.explicit and not self.any_subject and self.names_escape(tool)

    def applies(self, principal: Principal, tool: str, tier: Tier) -> Match | None:
        """Subject and tool/tier only: the part of a rule that holds for every call of a tool."""
        matched = [selector for selector in self.subjects if selector.matches(principal)]
        if not matched:
            return None
        if self.tiers is not None and tier not in self.tiers:
            return None
        if self.tools is not None and not any(fnmatchcase(tool, glob) for glob in self.tools):
            return None
        return Match(frozenset(), any(selector.explicit for selector in matched))

    def match(self, principal: Principal, request: PolicyRequest) -> Match | None:
        """The rule against a full request, target and argument constraints included.

        A deny or confirm rule naming a typed tool also applies to a call of the generic API
        tools that sends one of that tool's endpoints (`request.covered_by`), so what a
        rule forbids through the typed tool cannot be done through the back door. Allow
        rules do not carry over: a grant of a curated tool is not a grant of every
        parameter of its endpoints."""
        if self.effect is Effect.ALLOW and self.tasks != request.others_task:
            return None  # others' tasks need a tasks rule, which grants nothing else
        applies = self.applies(principal, request.tool, request.tier)
        if applies is None and self.effect is not Effect.ALLOW:
            applies = next(
                (
                    found
                    for tool in sorted(request.covered_by)
                    if (found := self.applies(principal, tool, request.tier)) is not None
                ),
                None,
            )
        if applies is None:
            return None
        missing = self._missing(request)
        if missing is None:
            return None
        return Match(missing, applies.explicit) if missing else applies

    def _missing(self, request: PolicyRequest) -> frozenset[str] | None:
        """None if a carried attribute fails a constraint, else the constrained ones absent."""
        every = self.effect is Effect.ALLOW
        missing: list[str] = []
        for attribute, constraint_name, fits in _CONSTRAINTS:
            constraint = getattr(self, constraint_name)
            if constraint is None:
                continue
            value = getattr(request, attribute)
            if value is None or value == ():
                missing.append(attribute)
            elif not fits(constraint, value, every):
                return None
        return frozenset(missing)

    def canonical(self) -> dict[str, Any]:
        """The rule as plain sorted data: for the bundle hash and for `explain`."""
        out: dict[str, Any] = {
            "id": self.id,
            "effect": str(self.effect),
            "subjects": sorted(str(selector) for selector in self.subjects),
        }
        if self.description:
            out["description"] = self.description
        plain: dict[str, Any] = {
            "tools": self.tools,
            "tiers": self.tiers,
            "clusters": self.clusters,
            "nodes": self.nodes,
            "vmids": None if self.vmids is None else [str(span) for span in self.vmids],
            "pools": self.pools,
            "tags": self.tags,
            "argv": None if self.argv is None else [list(p) for p in self.argv],
            "paths": None if self.paths is None else ["/" + "/".join(p) for p in self.paths],
            "hosts": self.hosts,
            "api": None
            if self.api is None
            else [f"{method} /{'/'.join(glob)}" for method, glob in self.api],
        }
        for key, value in plain.items():
            if value is not None:
                out[key] = sorted(value, key=str)
        if self.tasks:
            out["tasks"] = "any"
        if self.approvers:
            out["approvers"] = sorted(str(selector) for selector in self.approvers)
        return out


def _covers(globs: tuple[tuple[str, ...], ...], paths: tuple[str, ...], every: bool) -> bool:
    hits = (
        parts is not None and any(path_matches(glob, parts) for glob in globs)
        for parts in map(split_path, paths)
    )
    return all(hits) if every else any(hits)


def _api_covered(patterns: tuple[ApiPattern, ...], refs: tuple[ApiRef, ...], every: bool) -> bool:
    hits = (any(api_matches(pattern, ref) for pattern in patterns) for ref in refs)
    return all(hits) if every else any(hits)


def _hosts_covered(patterns: tuple[str, ...], hosts: tuple[str, ...], every: bool) -> bool:
    hits = (
        name is not None and any(host_matches(pattern, name) for pattern in patterns)
        for name in map(canonical_host, hosts)
    )
    return all(hits) if every else any(hits)


_Fits = Callable[[Any, Any, bool], bool]
_CONSTRAINTS: tuple[tuple[str, str, _Fits], ...] = (
    ("cluster", "clusters", lambda allowed, value, _: value in allowed),
    ("node", "nodes", lambda allowed, value, _: value in allowed),
    ("vmid", "vmids", lambda spans, vmid, _: any(vmid in span for span in spans)),
    ("pool", "pools", lambda allowed, value, _: value in allowed),
    ("tags", "tags", lambda wanted, tags, _: not wanted.isdisjoint(t.casefold() for t in tags)),
    ("argv", "argv", lambda patterns, argv, _: any(argv_matches(p, argv) for p in patterns)),
    ("paths", "paths", _covers),
    ("hosts", "hosts", _hosts_covered),
    ("api", "api", _api_covered),
)
"""Each target or argument constraint: the request attribute, the rule field, and the test
of a carried value (the flag says a grant must cover every value rather than any)."""
