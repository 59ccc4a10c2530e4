"""Reading a policy: the TOML format, its validation, and errors that point at a line.

A policy that cannot be read must stop the gateway from starting, with an error an
operator can act on at once: the file, the line, the rule and what is wrong. Names that
match nothing (a misspelt tool, an unknown tier) are errors too, because a rule that
silently never matches is a hole nobody notices. The pydantic models here are the single
description of the format; docs/policy.schema.json is generated from them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pvemcp.policy.decision import Effect
from pvemcp.policy.engine import PolicyEngine
from pvemcp.policy.profiles import BUILTIN_PREFIX, PROFILES, profile_rules
from pvemcp.policy.rules import (
    VMID_MAX,
    VMID_MIN,
    Rule,
    Selector,
    VmidRange,
    parse_api_pattern,
    parse_argv_pattern,
    parse_host_pattern,
    parse_path_glob,
)
from pvemcp.policy.tiers import Tier, parse_tiers


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy, where it is and why."""

    source: str
    line: int | None
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class PolicyError(Exception):
    """A policy that cannot be used; one `file:line: reason` line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def _selector(text: str) -> str:
    Selector.parse(text)
    return text


def _vmid(item: object) -> object:
    VmidRange.parse(item)
    return item


def _argv(tokens: list[str]) -> list[str]:
    parse_argv_pattern(tokens)
    return tokens


def _path_glob(glob: str) -> str:
    parse_path_glob(glob)
    return glob


Name = Annotated[str, Field(min_length=1, max_length=256)]
Names = Annotated[list[Name], Field(min_length=1)]
SelectorText = Annotated[
    str,
    AfterValidator(_selector),
    # For editors validating against the published schema; the validator gives the message.
    Field(json_schema_extra={"pattern": r"^(\*|local|(sub|group|scope|client):\S.*)$"}),
]
VmidItem = Annotated[
    Annotated[int, Field(ge=VMID_MIN, le=VMID_MAX)] | Annotated[str, Field(pattern=r"^\d+-\d+$")],
    BeforeValidator(_vmid),
]
ArgvPattern = Annotated[list[Name], Field(min_length=1), AfterValidator(_argv)]
PathGlob = Annotated[str, AfterValidator(_path_glob)]
HostPattern = Annotated[str, AfterValidator(parse_host_pattern)]


def _api_pattern(text: str) -> str:
    parse_api_pattern(text)
    return text


ApiPatternText = Annotated[
    str,
    AfterValidator(_api_pattern),
    Field(json_schema_extra={"pattern": r"^(\*|GET|POST|PUT|DELETE) /\S*$"}),
]


class RuleSpec(BaseModel):
    """One `[[rules]]` table. Every key given must match; a list matches any of its items."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="Rule")

    id: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            description="Unique id, recorded in every decision and audit record it takes "
            "part in. `builtin.` is reserved.",
        ),
    ]
    effect: Annotated[
        Literal["allow", "deny", "confirm", "approve"],
        Field(
            description="`allow` grants; `deny` refuses and overrides everything; `confirm` "
            "makes an allowed call wait for the human's confirmation; `approve` holds an "
            "allowed call until one of `approvers` (never the requester) approves it, in "
            "place of confirmation. `confirm` and `approve` grant nothing."
        ),
    ]
    description: Annotated[str, Field(description="Why the rule exists, for humans.")] = ""
    subjects: Annotated[
        list[SelectorText],
        Field(
            min_length=1,
            description="Who the rule applies to: `sub:NAME`, `group:NAME`, `scope:NAME`, "
            "`client:ID`, `local` (the stdio operator) or `*` (any authenticated caller).",
        ),
    ]
    tools: Annotated[
        Names | None,
        Field(description="Tool names; globs like `proxmox_guest_*` allowed. Omitted: any."),
    ] = None
    tiers: Annotated[
        list[Literal["read", "write", "destructive", "escape"]] | None,
        Field(min_length=1, description="Risk tiers. Omitted: any."),
    ] = None
    clusters: Annotated[Names | None, Field(description="Cluster names.")] = None
    nodes: Annotated[Names | None, Field(description="Node names.")] = None
    vmids: Annotated[
        list[VmidItem] | None,
        Field(min_length=1, description='Guest ids: integers or ranges like `"100-199"`.'),
    ] = None
    pools: Annotated[Names | None, Field(description="Resource pools.")] = None
    tags: Annotated[
        Names | None, Field(description="Guest tags, any of (compared case-insensitively).")
    ] = None
    argv: Annotated[
        list[ArgvPattern] | None,
        Field(
            min_length=1,
            description="Command patterns for CLI tools, any of: a literal program name, then "
            "literal tokens, `*` (one operand), `path:GLOB` (one canonical absolute path, "
            "matched by component like `paths`, e.g. `path:/nodes/**`) and a final `**` (all "
            "remaining operands).",
        ),
    ] = None
    paths: Annotated[
        list[PathGlob] | None,
        Field(
            min_length=1,
            description="Absolute path globs for file tools, matched by component: `*` within "
            "one component, `**` for any depth.",
        ),
    ] = None
    hosts: Annotated[
        list[HostPattern] | None,
        Field(
            min_length=1,
            description="Host names for URL-taking tools: `example.com` or `*.example.com`.",
        ),
    ] = None
    api: Annotated[
        list[ApiPatternText] | None,
        Field(
            min_length=1,
            description="API requests, any of: a method (`GET`, `POST`, `PUT`, `DELETE` or "
            "`*`), a space and a path glob matched by component against the endpoint's "
            "template (`/nodes/{node}/qemu/{vmid}/migrate`) or the concrete path, e.g. "
            "`POST /nodes/*/qemu/*/migrate`. Applies to the generic API tools and to every "
            "tool that declares the endpoint.",
        ),
    ] = None
    tasks: Annotated[
        Literal["any"] | None,
        Field(
            description="`any`: the subjects may also use the matched task tools on tasks "
            "other callers started (by default a caller sees and cancels only its own). "
            "Allow rules only; it grants nothing else.",
        ),
    ] = None

    approvers: Annotated[
        list[SelectorText] | None,
        Field(
            min_length=1,
            description="For `approve` rules (and only them): who may approve the held call, "
            "any one of: `sub:NAME`, `group:NAME`, `client:ID` or `local` (an operator of the "
            "gateway's machine, through `pvemcp approvals`). Never `*` or a scope; the "
            "requester is refused even when named.",
        ),
    ] = None


class PolicyFile(BaseModel):
    """A pvemcp policy file (TOML): rules added to the built-in rules and the profile."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="pvemcp policy")

    version: Annotated[Literal[1], Field(description="Format version.")] = 1
    rules: Annotated[list[RuleSpec], Field(description="The rules, as `[[rules]]` tables.")] = []


def policy_schema() -> str:
    """The JSON schema of the policy file, as published in docs/policy.schema.json."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **_without_null(PolicyFile.model_json_schema()),
    }
    return json.dumps(schema, indent=2) + "\n"


def _without_null(node: Any) -> Any:
    """The schema without pydantic's `anyOf: [X, null]` for optional keys: TOML has no null,
    so an omitted key is the only way to say "any", and editors should not suggest null."""
    if isinstance(node, list):
        return [_without_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _without_null(value) for key, value in node.items()}
    alternatives = out.get("anyOf")
    if isinstance(alternatives, list) and {"type": "null"} in alternatives:
        rest = [alt for alt in alternatives if alt != {"type": "null"}]
        del out["anyOf"]
        if out.get("default", ...) is None:
            del out["default"]
        out = {**rest[0], **out} if len(rest) == 1 else {"anyOf": rest, **out}
    return out


_HEADER = re.compile(r"^\s*\[")
_RULES_HEADER = re.compile(r"^\s*\[\[\s*rules\s*\]\]")
_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


class _Locator:
    """Maps a validation location (`rules`, index, key) back to a line of the file text.

    tomllib keeps no positions, so this scans for the `[[rules]]` headers and `key =` lines;
    it points at the right rule and key, which is what an author needs.
    """

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._tables = [n for n, line in enumerate(self._lines, 1) if _HEADER.match(line)]
        self._rules = [n for n, line in enumerate(self._lines, 1) if _RULES_HEADER.match(line)]

    def line(self, loc: tuple[int | str, ...]) -> int | None:
        key = next((part for part in loc[1:] if isinstance(part, str)), None)
        if loc[:1] == ("rules",) and len(loc) > 1 and isinstance(loc[1], int):
            if loc[1] < len(self._rules):
                start = self._rules[loc[1]]
                return self._key(key, start) or start
            return self._key("rules", 1)
        top = loc[0] if loc and isinstance(loc[0], str) else None
        return self._key(top, 1) or (1 if self._lines else None)

    def _key(self, key: str | None, start: int) -> int | None:
        if key is None:
            return None
        end = next((n for n in self._tables if n > start), len(self._lines) + 1)
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
        for number in range(start, end):
            if pattern.match(self._lines[number - 1]):
                return number
        return None


def _rule_label(data: Any, index: int) -> str:
    rules = data.get("rules") if isinstance(data, dict) else None
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        rule_id = rules[index].get("id")
        if isinstance(rule_id, str):
            return f"rule {rule_id!r}"
    return f"rule #{index + 1}"


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """`rule 'ops': vmids[1]` for a location inside a rule, the key path otherwise."""
    path = ""
    start = 2 if loc[:1] == ("rules",) and len(loc) > 1 and isinstance(loc[1], int) else 0
    for part in loc[start:]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    if start:
        label = _rule_label(data, int(loc[1]))
        return f"{label}: {path}" if path else label
    return path or "(file)"


def _message(error: Any) -> str:
    kind, message = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("literal_error", "string_pattern_mismatch") and isinstance(
        error.get("input"), str | int
    ):
        return f"{message} (got {error['input']!r})"
    return message


def _validation_problems(
    exc: ValidationError, data: Any, source: str, locator: _Locator
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, int | str))
        # Union members ("int", "str", "function-after[...]") are not keys the author wrote.
        loc = tuple(
            p for p in loc if isinstance(p, int) or ("[" not in p and p not in ("int", "str"))
        )
        problems.append(
            Problem(source, locator.line(loc), f"{_where(loc, data)}: {_message(error)}")
        )
    return problems


def _tool_problem(glob: str, known: Mapping[str, frozenset[Tier]]) -> str | None:
    if any(fnmatchcase(name, glob) for name in known):
        return None
    if not any(char in glob for char in "*?["):
        close = difflib.get_close_matches(glob, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown tool {glob!r}{hint}"
    return f"{glob!r} matches no known tool"


def _rule_problems(
    index: int, spec: RuleSpec, known: Mapping[str, frozenset[Tier]], seen: dict[str, int]
) -> list[tuple[str, str]]:
    """(key, reason) for what the file format alone cannot check: names against the registry,
    unique ids, and escape grants that could never take effect."""
    found: list[tuple[str, str]] = []
    if spec.id.startswith(BUILTIN_PREFIX):
        found.append(("id", f"ids starting with {BUILTIN_PREFIX!r} are reserved"))
    if spec.id in seen:
        found.append(("id", f"duplicate id {spec.id!r}: rule #{seen[spec.id] + 1} has it"))
    seen.setdefault(spec.id, index)
    bad = [p for p in (_tool_problem(g, known) for g in spec.tools or ()) if p is not None]
    found += [("tools", problem) for problem in bad]
    if spec.tools is not None and spec.tiers is not None and not bad:
        tools = [name for name in known if any(fnmatchcase(name, g) for g in spec.tools)]
        if not any(known[name] & {Tier(t) for t in spec.tiers} for name in tools):
            found.append(
                (
                    "tiers",
                    f"none of the tools matched by 'tools' is of tier {', '.join(spec.tiers)}",
                )
            )
    if spec.tasks is not None and spec.effect != "allow":
        found.append(("tasks", "only an allow rule can grant others' tasks"))
    found += _approver_problems(spec)
    literal_escape = any(known.get(name) == frozenset({Tier.ESCAPE}) for name in spec.tools or ())
    if spec.effect == "allow" and ("escape" in (spec.tiers or ()) or literal_escape):
        selectors = [Selector.parse(text) for text in spec.subjects]
        if any(s.kind == "any" for s in selectors) or not any(s.explicit for s in selectors):
            found.append(
                (
                    "subjects",
                    "an allow rule for escape must name its subjects (sub:, client:, group: or "
                    "local) and not use '*': '*' and scopes can never grant escape",
                )
            )
    return found


def _approver_problems(spec: RuleSpec) -> list[tuple[str, str]]:
    """An approve rule must name its approvers, explicitly (four eyes means two known
    people: `*` or a scope would let any other token holder, an agent too, approve)."""
    if spec.effect != "approve":
        return (
            [] if spec.approvers is None else [("approvers", "only an approve rule has approvers")]
        )
    if spec.approvers is None:
        return [("effect", "an approve rule needs approvers (sub:, group:, client: or local)")]
    vague = [text for text in spec.approvers if not Selector.parse(text).explicit]
    if vague:
        return [
            (
                "approvers",
                f"{', '.join(map(repr, vague))} cannot approve: name approvers with sub:, "
                "group:, client: or local, never '*' or a scope",
            )
        ]
    return []


def _compile(spec: RuleSpec) -> Rule:
    def names(values: list[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(values)

    return Rule(
        id=spec.id,
        effect=Effect(spec.effect),
        subjects=tuple(Selector.parse(text) for text in spec.subjects),
        description=spec.description,
        tools=None if spec.tools is None else tuple(spec.tools),
        tiers=None if spec.tiers is None else frozenset(Tier(t) for t in spec.tiers),
        clusters=names(spec.clusters),
        nodes=names(spec.nodes),
        vmids=None if spec.vmids is None else tuple(VmidRange.parse(v) for v in spec.vmids),
        pools=names(spec.pools),
        tags=names(spec.tags),
        argv=None if spec.argv is None else tuple(parse_argv_pattern(p) for p in spec.argv),
        paths=None if spec.paths is None else tuple(parse_path_glob(p) for p in spec.paths),
        hosts=None if spec.hosts is None else tuple(spec.hosts),
        api=None if spec.api is None else tuple(parse_api_pattern(p) for p in spec.api),
        tasks=spec.tasks == "any",
        approvers=tuple(Selector.parse(text) for text in spec.approvers or ()),
    )


def parse_policy(text: str, *, source: str, known_tools: Mapping[str, str]) -> tuple[Rule, ...]:
    """The rules of a policy file's text; `PolicyError` listing every problem with its line.

    `known_tools` maps each registered tool name to its tier (or, for a generic API tool, its
    tiers comma-separated: `parse_tiers`), so rules naming a tool that does
    not exist (or a tier none of the named tools has) are refused here.
    """
    known = {name: parse_tiers(tiers) for name, tiers in known_tools.items()}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        if found:
            line, column = int(found[2]), int(found[3])
            raise PolicyError(
                [Problem(source, line, f"invalid TOML: {found[1]}", column)]
            ) from None
        reason = str(exc).removesuffix(" (at end of document)")
        raise PolicyError(
            [Problem(source, max(1, len(text.splitlines())), f"invalid TOML: {reason}")]
        ) from None
    locator = _Locator(text)
    problems: list[Problem] = []
    try:
        specs = list(enumerate(PolicyFile.model_validate(data).rules))
    except ValidationError as exc:
        problems += _validation_problems(exc, data, source, locator)
        specs = list(_valid_rules(data))
    seen: dict[str, int] = {}
    for index, spec in specs:
        for key, reason in _rule_problems(index, spec, known, seen):
            loc = ("rules", index, key)
            problems.append(Problem(source, locator.line(loc), f"{_where(loc, data)}: {reason}"))
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: problem.line or 0))
    return tuple(_compile(spec) for _, spec in specs)


def _valid_rules(data: dict[str, Any]) -> Iterator[tuple[int, RuleSpec]]:
    """The rules that are well-formed on their own, so that a file with one malformed rule
    still gets the registry checks (unknown tools, duplicate ids) on all the others."""
    rules = data.get("rules")
    for index, raw in enumerate(rules if isinstance(rules, list) else ()):
        with contextlib.suppress(ValidationError):
            yield index, RuleSpec.model_validate(raw)


def read_policy(path: Path, known_tools: Mapping[str, str]) -> tuple[Rule, ...]:
    """The rules of the policy file at `path`; `PolicyError` if unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(path), None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise PolicyError([Problem(str(path), None, "not UTF-8 text")]) from None
    return parse_policy(text, source=str(path), known_tools=known_tools)


def load_policy(
    *,
    profile: str,
    profile_subjects: Sequence[str],
    file: Path | None,
    known_tools: Mapping[str, str],
) -> PolicyEngine:
    """The engine for a configuration: built-in rules, the profile for its subjects, then the
    file's rules. Raises `PolicyError` naming the setting, or the file and line, at fault."""
    problems: list[Problem] = []
    if profile not in PROFILES:
        problems.append(
            Problem(
                "policy.profile", None, f"unknown profile {profile!r}; use {', '.join(PROFILES)}"
            )
        )
    subjects: list[Selector] = []
    for text in profile_subjects:
        try:
            subjects.append(Selector.parse(text))
        except ValueError as exc:
            problems.append(Problem("policy.profile_subjects", None, str(exc)))
    if problems:
        raise PolicyError(problems)
    rules = read_policy(file.expanduser(), known_tools) if file is not None else ()
    return PolicyEngine((*profile_rules(profile, subjects), *rules))
