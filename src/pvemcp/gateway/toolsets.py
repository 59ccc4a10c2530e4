"""Which tools a caller sees: toolsets enabled by config, and per session at run time.

A `Catalogue` holds the toolsets a gateway serves. A toolset's modules are imported (and
its tools' schemas built, by the gateway) only when a caller first needs it: a tools/list
or call of a caller for whom it is enabled, or a call naming one of its tools. Start-up
therefore costs the same whatever the size of the catalogue.

Enabled toolsets are the configured ones plus those a session enabled with the toolset
tool. A session is the MCP session where the transport has one (handshake-era streamable
HTTP); elsewhere there is none to hang state on, so it is the caller in this process:
stdio is one client per process, and 2026-07-28 or stateless HTTP requests of one
principal share what it enabled (per replica, like confirmation tokens).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pvemcp.gateway.errors import ToolFailure
from pvemcp.gateway.registry import AnySpec, Toolset
from pvemcp.policy.principal import Principal

ALL = "all"
"""The config value that enables every toolset."""

MAX_SESSIONS = 4096
"""Sessions whose run-time toolsets are remembered; the longest unused is forgotten first
(it falls back to the configured toolsets), so no caller can grow the process's memory."""

SessionKey = tuple[str, str | None, str | None, str, str | None]


def session_key(principal: Principal) -> SessionKey:
    """Who enabled a toolset: the caller, and its MCP session when it has one."""
    return (
        principal.transport,
        principal.issuer,
        principal.client_id,
        principal.subject,
        principal.session,
    )


def _given(specs: Sequence[AnySpec]) -> Callable[[], Sequence[AnySpec]]:
    kept = tuple(specs)
    return lambda: kept


class Catalogue:
    """The toolsets a gateway serves, the configured ones enabled, each loaded on first need."""

    def __init__(
        self,
        toolsets: Sequence[Toolset],
        enabled: Iterable[str] | None = None,
        *,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.toolsets = {toolset.name: toolset for toolset in toolsets}
        if len(self.toolsets) != len(toolsets):
            raise ValueError("two toolsets have the same name")
        names = set(self.toolsets) if enabled is None else set(enabled)
        unknown = names - set(self.toolsets)
        if unknown:
            raise ValueError(f"unknown toolsets: {', '.join(sorted(unknown))}")
        self.default = frozenset(names)
        """The toolsets every caller has enabled: the configured ones."""
        self._loaded: dict[str, tuple[AnySpec, ...]] = {}
        self._by_name: dict[str, AnySpec] = {}
        self._sessions: OrderedDict[SessionKey, frozenset[str]] = OrderedDict()
        self._max_sessions = max_sessions

    @classmethod
    def from_specs(cls, specs: Iterable[AnySpec]) -> Catalogue:
        """A catalogue of given tools, every toolset enabled (tests, tools made in place)."""
        groups: dict[str, list[AnySpec]] = {}
        for spec in specs:
            groups.setdefault(spec.toolset, []).append(spec)
        return cls([Toolset(name, "", _given(found)) for name, found in groups.items()])

    def load(self, name: str) -> tuple[AnySpec, ...]:
        """The tools of toolset `name`, importing its modules the first time."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        specs = tuple(self.toolsets[name].load())
        for spec in specs:
            if spec.toolset != name:
                raise ValueError(f"tool {spec.name} says toolset {spec.toolset!r}, not {name!r}")
            if spec.name in self._by_name:
                raise ValueError(f"tool {spec.name} is registered twice")
        self._by_name.update((spec.name, spec) for spec in specs)
        self._loaded[name] = specs
        return specs

    def specs(self, names: Iterable[str]) -> list[AnySpec]:
        """The tools of toolsets `names`, in the catalogue's order."""
        wanted = set(names)
        return [spec for name in self.toolsets if name in wanted for spec in self.load(name)]

    def all_specs(self) -> list[AnySpec]:
        """Every tool of every toolset (loads them all)."""
        return self.specs(self.toolsets)

    def loaded(self) -> list[AnySpec]:
        """The tools of the toolsets loaded so far."""
        return [spec for specs in self._loaded.values() for spec in specs]

    def find(self, tool: str) -> AnySpec | None:
        """The tool named `tool`, loading toolsets until it is found (all of them for a
        name no tool has: a rare call, paid once)."""
        for name in self.toolsets:
            found = self._by_name.get(tool)
            if found is not None:
                return found
            self.load(name)
        return self._by_name.get(tool)

    def enabled_for(self, principal: Principal) -> frozenset[str]:
        """The toolsets enabled for this caller's session: configured plus run-time."""
        return self._sessions.get(session_key(principal), self.default)

    def enable(self, principal: Principal, name: str) -> bool:
        """Enable toolset `name` for this caller's session; False if it already was."""
        current = self.enabled_for(principal)
        if name in current:
            return False
        key = session_key(principal)
        self._sessions[key] = current | {name}
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class ToolsetEntry:
    """One toolset as its caller sees it."""

    name: str
    description: str
    enabled: bool
    tools: tuple[str, ...]
    """The toolset's tools policy could allow this caller."""


class SessionToolsets:
    """The toolset tool's handle on its caller's session: list toolsets, enable one."""

    def __init__(
        self,
        catalogue: Catalogue,
        principal: Principal,
        could_allow: Callable[[AnySpec], bool],
    ) -> None:
        self._catalogue = catalogue
        self._principal = principal
        self._could_allow = could_allow

    def entry(self, name: str) -> ToolsetEntry:
        toolset = self._catalogue.toolsets[name]
        return ToolsetEntry(
            name=name,
            description=toolset.description,
            enabled=name in self._catalogue.enabled_for(self._principal),
            tools=tuple(
                spec.name for spec in self._catalogue.load(name) if self._could_allow(spec)
            ),
        )

    def listing(self) -> list[ToolsetEntry]:
        """Every toolset with what it holds for this caller (loads them all)."""
        return [self.entry(name) for name in self._catalogue.toolsets]

    def enable(self, name: str) -> ToolsetEntry:
        """Enable toolset `name` for this session; refused when it is unknown or policy
        allows this caller none of its tools (enabling it would show nothing)."""
        if name not in self._catalogue.toolsets:
            known = ", ".join(self._catalogue.toolsets)
            raise ToolFailure(
                "invalid_argument",
                f"toolset: no toolset named {name!r}",
                field="toolset",
                hint=f"toolset must be one of: {known}",
            )
        entry = self.entry(name)
        if not entry.tools:
            raise ToolFailure(
                "toolset_not_allowed",
                f"policy allows you none of the tools of toolset {name!r}",
                hint="An operator grants tools in the policy file (see docs/policy.md).",
            )
        self._catalogue.enable(self._principal, name)
        return ToolsetEntry(entry.name, entry.description, True, entry.tools)
