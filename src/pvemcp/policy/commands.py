"""`pvemcp policy check | explain | schema`: the policy as an operator tests it from a shell.

Plain functions that print and return an exit status, so the CLI only maps its arguments
onto them. `explain` exits with the effect (0 allow, 3 confirm, 4 approve, 1 deny) so a
policy can be tested in CI with nothing but the shell: `pvemcp policy explain ... || echo refused`.
"""

from __future__ import annotations

import difflib
import json
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pvemcp.policy.decision import Decision, Effect
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.loader import PolicyError, load_policy, policy_schema, read_policy
from pvemcp.policy.principal import Principal
from pvemcp.policy.profiles import ENGINE_RULES
from pvemcp.policy.rules import ApiRef, parse_api_pattern
from pvemcp.policy.tiers import Tier, parse_tiers

EXIT_ALLOW, EXIT_DENY, EXIT_INVALID, EXIT_CONFIRM, EXIT_APPROVE = 0, 1, 2, 3, 4
_EXIT = {
    Effect.ALLOW: EXIT_ALLOW,
    Effect.DENY: EXIT_DENY,
    Effect.CONFIRM: EXIT_CONFIRM,
    Effect.APPROVE: EXIT_APPROVE,
}


def check(path: Path, known_tools: Mapping[str, str]) -> int:
    """Validate a policy file: `ok: N rules` on stdout, or one `file:line: reason` per problem
    on stderr. 0 when valid, 1 otherwise."""
    try:
        rules = read_policy(path, known_tools)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {len(rules)} rules in {path}")
    return 0


def schema(output: Path, *, check_only: bool = False) -> int:
    """Write the policy file's JSON schema to `output` (`-`: stdout), or with `check_only`
    report (exit 1) whether the file there is stale.

    The default `output` is the checkout's docs/policy.schema.json, relative to the current
    directory: run elsewhere, it cannot be written, which is said in one line (exit 2).
    """
    text = policy_schema()
    if check_only:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != text:
            print(
                f"{output} is stale; run: pvemcp policy schema --output {output}", file=sys.stderr
            )
            return 1
        print(f"ok: {output} is current")
        return 0
    if str(output) == "-":
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"cannot write {output}: {exc.strerror}; outside the pvemcp checkout give "
            "--output FILE, or --output - for stdout",
            file=sys.stderr,
        )
        return EXIT_INVALID
    print(f"wrote {output}")
    return 0


def explain(
    *,
    tool: str,
    known_tools: Mapping[str, str],
    subject: str = "local",
    groups: Sequence[str] = (),
    scopes: Sequence[str] = (),
    client_id: str | None = None,
    args_json: str = "{}",
    profile: str = "operator",
    profile_subjects: Sequence[str] = ("local",),
    file: Path | None = None,
    as_json: bool = False,
) -> int:
    """Decide one imagined call and print the effect, the deciding rules and why.

    `subject="local"` is the stdio operator; anything else is an HTTP caller with that `sub`
    and the given groups, scopes and client id. `args_json` holds the call's arguments;
    the target keys `cluster`, `node`, `vmid`, `pool`, `tags`, `argv`, `paths` (or `path`),
    `hosts` (or `url`), `api` (`["POST /nodes/pve1/qemu/100/migrate"]`), `covered_by` (typed
    tools sending those endpoints) and `tier` (for a generic API tool) are read from it, so
    a resolved target (a guest's pool and tags) can be supplied there too. Exit: 0 allow,
    3 confirm, 4 approve, 1 deny, 2 invalid input or policy.
    """
    try:
        engine = load_policy(
            profile=profile, profile_subjects=profile_subjects, file=file, known_tools=known_tools
        )
        request = _request(tool, known_tools, args_json)
    except (PolicyError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    principal = Principal(
        subject=subject,
        transport="stdio" if subject == "local" else "http",
        client_id=client_id,
        scopes=frozenset(scopes),
        groups=frozenset(groups),
    )
    decision = engine.decide(principal, request)
    if as_json:
        print(json.dumps(_as_data(engine, decision), indent=2))
    else:
        print(_as_text(engine, principal, request, decision))
    return _EXIT[decision.effect]


def _request(tool: str, known_tools: Mapping[str, str], args_json: str) -> PolicyRequest:
    if tool not in known_tools:
        close = difflib.get_close_matches(tool, list(known_tools), n=1)
        raise ValueError(
            f"unknown tool {tool!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        )
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--args is not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ValueError("--args must be a JSON object")
    url = _text(args, "url")
    return PolicyRequest(
        tool=tool,
        tier=_tier(known_tools[tool], _text(args, "tier")),
        cluster=_text(args, "cluster"),
        arguments=args,
        node=_text(args, "node"),
        vmid=_vmid(args),
        pool=_text(args, "pool"),
        tags=None if "tags" not in args else frozenset(_texts(args, "tags")),
        argv=None if "argv" not in args else tuple(_texts(args, "argv")),
        paths=tuple(_texts(args, "paths") or _texts(args, "path")),
        hosts=tuple(_texts(args, "hosts"))
        or ((urllib.parse.urlsplit(url).hostname or url,) if url else ()),
        api=tuple(_api(text) for text in _texts(args, "api")),
        covered_by=frozenset(_texts(args, "covered_by")),
    )


def _tier(registered: str, asked: str | None) -> Tier:
    """The tier to decide on: the tool's, or for a generic API tool (several tiers) the
    one `--args` names, else its riskiest."""
    tiers = parse_tiers(registered)
    if asked is None:
        return Tier.most(tiers)
    if asked not in tiers:
        raise ValueError(f"--args: tier must be one of {', '.join(sorted(tiers))} for this tool")
    return Tier(asked)


def _api(text: str) -> ApiRef:
    """`METHOD /path` from `--args` api: matched as both the template and the path."""
    method, path = parse_api_pattern(text)
    if method == "*":
        raise ValueError(f"--args: api {text!r} needs the request's method, not *")
    joined = "/" + "/".join(path)
    return method, joined, joined


def _text(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"--args: {key} must be a string")
    return value


def _texts(args: Mapping[str, Any], key: str) -> list[str]:
    """A list of strings; a single string counts as a list of one (`path`, PVE's `a;b` tags
    are not split: pass a list)."""
    value = args.get(key, [])
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"--args: {key} must be a string or a list of strings")
    return values


def _vmid(args: Mapping[str, Any]) -> int | None:
    value = args.get("vmid")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError("--args: vmid must be an integer")
    return value


def _deciding(engine: PolicyEngine, decision: Decision) -> list[tuple[str, str, str]]:
    """(id, effect or "engine", description) for each rule id in the decision."""
    rules = {rule.id: rule for rule in engine.rules}
    rows = []
    for rule_id in decision.rule_ids:
        rule = rules.get(rule_id)
        if rule is not None:
            rows.append((rule_id, str(rule.effect), rule.description))
        else:
            rows.append((rule_id, "engine", ENGINE_RULES.get(rule_id, "")))
    return rows


def _as_data(engine: PolicyEngine, decision: Decision) -> dict[str, Any]:
    rules = {rule.id: rule for rule in engine.rules}
    return {
        "effect": str(decision.effect),
        "rule_ids": list(decision.rule_ids),
        "reason": decision.reason,
        "unresolved": sorted(decision.unresolved),
        "approvers": list(decision.approvers),
        "rules": [
            rules[rule_id].canonical() if rule_id in rules else {"id": rule_id, "effect": "engine"}
            for rule_id in decision.rule_ids
        ],
        "bundle_hash": engine.bundle_hash,
    }


def _as_text(
    engine: PolicyEngine, principal: Principal, request: PolicyRequest, decision: Decision
) -> str:
    target = " ".join(
        f"{key}={value}"
        for key, value in (
            ("cluster", request.cluster),
            ("node", request.node),
            ("vmid", request.vmid),
            ("pool", request.pool),
            ("tags", None if request.tags is None else ",".join(sorted(request.tags))),
            ("argv", None if request.argv is None else " ".join(request.argv)),
            ("paths", ",".join(request.paths) or None),
            ("hosts", ",".join(request.hosts) or None),
            ("api", ",".join(f"{m} {t}" for m, t, _ in request.api) or None),
            ("covered_by", ",".join(sorted(request.covered_by)) or None),
        )
        if value is not None
    )
    caller = f"{principal.subject} ({principal.transport})"
    if principal.groups:
        caller += f" groups={','.join(sorted(principal.groups))}"
    if principal.scopes:
        caller += f" scopes={','.join(sorted(principal.scopes))}"
    if principal.client_id:
        caller += f" client={principal.client_id}"
    lines = [
        f"decision: {decision.effect}",
        f"call:     {request.tool} [{request.tier}] {target}".rstrip(),
        f"caller:   {caller}",
        f"reason:   {decision.reason}",
    ]
    if decision.approvers:
        lines.append(f"approvers: {', '.join(decision.approvers)} (any one; never the caller)")
    if decision.unresolved:
        lines.append(f"unknown:  {', '.join(sorted(decision.unresolved))} (not given in --args)")
    lines.append("rules:")
    lines += [
        f"  {rule_id} ({effect}){': ' + text if text else ''}"
        for rule_id, effect, text in _deciding(engine, decision)
    ]
    lines.append(f"policy:   sha256:{engine.bundle_hash}")
    return "\n".join(lines)
