"""Loading a policy: line-precise errors, profiles from config, and the published schema."""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

import pytest

from pvemcp.policy.decision import Effect
from pvemcp.policy.loader import PolicyError, load_policy, parse_policy, policy_schema
from pvemcp.tools import all_tools
from tests.policy.policykit import ALICE, KNOWN_TOOLS, LOCAL, request

DOCS = Path(__file__).resolve().parents[2] / "docs"

GOOD = """\
[[rules]]
id = "ops"
effect = "allow"
subjects = ["group:ops"]
tiers = ["write"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(dedent(text), source="p.toml", known_tools=KNOWN_TOOLS)
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "unknown tool",
            GOOD + '\n[[rules]]\nid = "b"\neffect = "allow"\nsubjects = ["local"]\n'
            'tools = ["proxmox_guest_stp"]\n',
            "p.toml:11: rule 'b': tools: unknown tool 'proxmox_guest_stp' "
            "(did you mean 'proxmox_guest_stop'?)",
        ),
        (
            "glob matching nothing",
            '[[rules]]\nid = "b"\neffect = "deny"\nsubjects = ["*"]\ntools = ["pve_*"]\n',
            "p.toml:5: rule 'b': tools: 'pve_*' matches no known tool",
        ),
        (
            "unknown tier",
            '[[rules]]\nid = "b"\neffect = "allow"\nsubjects = ["local"]\n'
            'tiers = ["write", "danger"]\n',
            "p.toml:5: rule 'b': tiers[1]: Input should be 'read', 'write', 'destructive' or "
            "'escape' (got 'danger')",
        ),
        (
            "duplicate id",
            GOOD + "\n" + GOOD,
            "p.toml:8: rule 'ops': id: duplicate id 'ops': rule #1 has it",
        ),
        (
            "bad effect",
            GOOD.replace('"allow"', '"permit"'),
            "p.toml:3: rule 'ops': effect: Input should be 'allow', 'deny', 'confirm' or "
            "'approve' (got 'permit')",
        ),
        (
            "TOML syntax",
            GOOD.replace('effect = "allow"', "effect = allow"),
            "p.toml:3:10: invalid TOML: Invalid value",
        ),
        (
            "TOML error at the end",
            GOOD + 'tools = ["a",\n',
            "p.toml:6: invalid TOML: Invalid value",
        ),
        ("unknown key", GOOD + "node = 'pve1'\n", "p.toml:6: rule 'ops': node: unknown key"),
        ("unknown top-level key", "rule = 1\n" + GOOD, "p.toml:1: rule: unknown key"),
        (
            "missing subjects",
            '\n[[rules]]\nid = "b"\neffect = "allow"\n',
            "p.toml:2: rule 'b': subjects: required key is missing",
        ),
        (
            "bad selector",
            GOOD.replace("group:ops", "ops"),
            "p.toml:4: rule 'ops': subjects[0]: 'ops' is not a subject selector",
        ),
        (
            "reserved id",
            GOOD.replace('"ops"', '"builtin.mine"'),
            "p.toml:2: rule 'builtin.mine': id: ids starting with 'builtin.' are reserved",
        ),
        (
            "tools and tiers that never meet",
            GOOD + 'tools = ["proxmox_guest_list"]\n',
            "p.toml:5: rule 'ops': tiers: none of the tools matched by 'tools' is of tier write",
        ),
        (
            "escape for everyone",
            '[[rules]]\nid = "b"\neffect = "allow"\nsubjects = ["*"]\ntiers = ["escape"]\n',
            "p.toml:4: rule 'b': subjects: an allow rule for escape must name its subjects",
        ),
        (
            "escape by scope",
            '[[rules]]\nid = "b"\neffect = "allow"\nsubjects = ["scope:admin"]\n'
            'tools = ["proxmox_cli_run"]\n',
            "p.toml:4: rule 'b': subjects: an allow rule for escape must name its subjects",
        ),
        (
            "bad vmid range",
            GOOD + 'vmids = [100, "300-200"]\n',
            "p.toml:6: rule 'ops': vmids[1]: '300-200' is not a vmid range",
        ),
        (
            "vmid as a string",
            GOOD + 'vmids = ["150"]\n',
            "p.toml:6: rule 'ops': vmids[0]: '150' is not a vmid: use an integer",
        ),
        (
            "argv wildcard program",
            GOOD + 'argv = [["*", "**"]]\n',
            "p.toml:6: rule 'ops': argv[0]: an argv pattern must start with a literal program",
        ),
        (
            "argv path token with ..",
            GOOD + 'argv = [["pvesh", "get", "path:/nodes/../access"]]\n',
            "p.toml:6: rule 'ops': argv[0]: argv token 2: '/nodes/../access' is not an absolute",
        ),
        (
            "path with ..",
            GOOD + 'paths = ["/etc/pve/../shadow"]\n',
            "p.toml:6: rule 'ops': paths[0]: '/etc/pve/../shadow' is not an absolute canonical",
        ),
        (
            "relative path",
            GOOD + 'paths = ["etc/pve/**"]\n',
            "p.toml:6: rule 'ops': paths[0]: 'etc/pve/**' is not an absolute canonical",
        ),
        (
            "bad host",
            GOOD + 'hosts = ["https://example.com"]\n',
            "p.toml:6: rule 'ops': hosts[0]: 'https://example.com' is not a host name",
        ),
        (
            "empty list",
            GOOD + "nodes = []\n",
            "p.toml:6: rule 'ops': nodes: List should have at least 1 item",
        ),
        (
            "wrong type",
            GOOD + 'nodes = "pve1"\n',
            "p.toml:6: rule 'ops': nodes: Input should be a valid list",
        ),
        (
            "inline rules",
            'version = 1\nrules = [{id = "x", effect = "allow"}]\n',
            "p.toml:2: rule 'x': subjects: required key is missing",
        ),
        ("bad version", "version = 2\n", "p.toml:1: version: Input should be 1"),
    ],
)
def test_errors_point_at_the_line(name: str, text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), f"{name}: {found}"


def test_every_problem_is_reported_in_line_order() -> None:
    text = (
        '[[rules]]\nid = "a"\neffect = "allow"\nsubjects = ["local"]\ntools = ["nope"]\n\n'
        '[[rules]]\nid = "b"\neffect = "maybe"\nsubjects = ["local"]\n\n'
        '[[rules]]\nid = "a"\neffect = "deny"\nsubjects = ["local"]\n'
    )
    assert [p.split(":")[1] for p in problems(text)] == ["5", "9", "13"]


def test_rules_table_after_other_tables() -> None:
    text = GOOD + '\n[[rules]]\nid = "z"\neffect = "allow"\nsubjects = ["local"]\ntiers = ["x"]\n'
    assert problems(text) == [
        "p.toml:11: rule 'z': tiers[0]: Input should be 'read', 'write', 'destructive' or "
        "'escape' (got 'x')"
    ]


def test_load_policy_with_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    policy = load_policy(
        profile="operator", profile_subjects=["local"], file=path, known_tools=KNOWN_TOOLS
    )
    assert policy.decide(ALICE, request("proxmox_guest_power")).effect is Effect.ALLOW
    assert policy.decide(LOCAL, request("proxmox_guest_stop")).effect is Effect.CONFIRM
    assert len(policy.bundle_hash) == 64


def test_load_policy_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD.replace("write", "writ"))
    with pytest.raises(PolicyError, match=re.escape(f"{path}:5: rule 'ops': tiers[0]")):
        load_policy(profile="operator", profile_subjects=[], file=path, known_tools=KNOWN_TOOLS)
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=re.escape(f"{missing}: cannot read")):
        load_policy(profile="operator", profile_subjects=[], file=missing, known_tools=KNOWN_TOOLS)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(profile="operator", profile_subjects=[], file=path, known_tools=KNOWN_TOOLS)


def test_load_policy_checks_the_config() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(profile="root", profile_subjects=["alice", "local"], file=None, known_tools={})
    assert [str(p) for p in caught.value.problems] == [
        "policy.profile: unknown profile 'root'; use read-only, operator, admin",
        "policy.profile_subjects: 'alice' is not a subject selector; use sub:NAME, group:NAME, "
        "scope:NAME, client:ID, local or *",
    ]


def test_schema_is_current() -> None:
    """docs/policy.schema.json is generated; regenerate it with `pvemcp policy schema`."""
    assert (DOCS / "policy.schema.json").read_text() == policy_schema()


def test_documented_examples_load() -> None:
    """Every TOML example in docs/policy.md is a valid policy for the real tool registry."""
    text = (DOCS / "policy.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    examples = [block for block in blocks if "[[rules]]" in block]
    assert len(examples) >= 3
    known = {spec.name: str(spec.tier) for spec in all_tools()}
    for example in examples:
        parse_policy(example, source="docs/policy.md", known_tools=known)
