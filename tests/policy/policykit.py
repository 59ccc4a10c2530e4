"""Shared pieces of the policy tests: a tool registry with escape tools, callers, builders."""

from __future__ import annotations

from textwrap import dedent
from typing import Any

from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.loader import parse_policy
from pvemcp.policy.principal import Principal
from pvemcp.policy.profiles import profile_rules
from pvemcp.policy.rules import Selector
from pvemcp.policy.tiers import Tier

# The real registry has no escape or URL tools yet; the policy must handle them already.
KNOWN_TOOLS: dict[str, str] = {
    "proxmox_guest_list": "read",
    "proxmox_guest_get": "read",
    "proxmox_guest_power": "write",
    "proxmox_guest_stop": "destructive",
    "proxmox_download_url": "write",
    "proxmox_cli_run": "escape",
    "proxmox_file_write": "escape",
}

LOCAL = Principal.local()
ALICE = Principal(
    "alice",
    "http",
    client_id="agent-1",
    groups=frozenset({"ops"}),
    scopes=frozenset({"pve.write"}),
)
BOB = Principal("bob", "http", client_id="agent-2")
FAKE_LOCAL = Principal("local", "http")
"""An HTTP caller whose token says `sub: local`: not the stdio operator."""


def engine(
    policy: str = "", *, profile: str = "read-only", subjects: tuple[str, ...] = ()
) -> PolicyEngine:
    """An engine from TOML text (through the real loader) plus a profile for `subjects`."""
    rules = parse_policy(dedent(policy), source="test.toml", known_tools=KNOWN_TOOLS)
    granted = profile_rules(profile, [Selector.parse(s) for s in subjects])
    return PolicyEngine((*granted, *rules))


def request(tool: str, **target: Any) -> PolicyRequest:
    """A request for `tool` with its registry tier; cluster `lab` unless given."""
    target.setdefault("cluster", "lab")
    return PolicyRequest(tool=tool, tier=Tier(KNOWN_TOOLS[tool]), **target)
