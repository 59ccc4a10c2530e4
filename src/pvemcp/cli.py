"""The `pvemcp` command: serve, demo, simulate, tools, config."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shlex
import sys
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

from pvemcp import __version__
from pvemcp.config import ConfigError, Settings, load_settings
from pvemcp.secrets.redaction import MASK, Redactor

DOCS_PATH = Path("docs/configuration.md")
POLICY_SCHEMA_PATH = Path("docs/policy.schema.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvemcp",
        description="An audited MCP gateway for Proxmox VE. Logs go to stderr as JSON.",
    )
    parser.add_argument("--version", action="version", version=f"pvemcp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve MCP over stdio, HTTP or both for the configured cluster(s); refuses to "
        "start when none is configured",
    )
    serve.add_argument("--config", type=Path, help="TOML config file (else PVEMCP_CONFIG)")
    _transport_arguments(serve)

    demo = commands.add_parser(
        "demo", help="serve MCP against the embedded simulator; no config needed"
    )
    demo.add_argument(
        "--time-scale", type=float, help="task duration multiplier (0 = instant, 1 = real time)"
    )
    demo.add_argument("--guests", type=int, help="grow the simulated cluster to N guests")
    demo.add_argument("--nodes", type=int, help="grow the simulated cluster to N nodes")
    _transport_arguments(demo)

    commands.add_parser(
        "simulate", help="run the PVE API simulator alone over HTTPS", add_help=False
    )

    tools = commands.add_parser("tools", help="list the tools by toolset with their risk tier")
    tools_format = tools.add_mutually_exclusive_group()
    tools_format.add_argument(
        "--json", action="store_true", help="print the tool definitions by toolset"
    )
    tools_format.add_argument(
        "--markdown", action="store_true", help="print docs/tools.md (the tools reference)"
    )
    tools_format.add_argument(
        "--readme", action="store_true", help="print README.md's table of toolsets"
    )

    _policy_parser(commands)
    _audit_parser(commands)
    _enroll_parser(commands)
    _inventory_parser(commands)
    _approvals_parser(commands)
    secrets = commands.add_parser("secrets", help="check where each credential comes from")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    secrets_check = secrets_commands.add_parser(
        "check", help="for each cluster, whether each credential loads (never its value)"
    )
    secrets_check.add_argument("--config", type=Path)

    config = commands.add_parser("config", help="show the effective config or write its docs")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    show.add_argument("--config", type=Path)
    docs = config_commands.add_parser("docs", help="write docs/configuration.md")
    docs.add_argument("--output", type=Path, default=DOCS_PATH, help="a file, or - for stdout")
    docs.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number 0-65535")
    return int(text)


def _transport_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=["stdio", "http", "both"],
        default="stdio",
        help="stdio (default), streamable HTTP, or both in one process (stdin EOF stops both)",
    )
    parser.add_argument("--host", help="HTTP bind address (overrides http.host)")
    parser.add_argument("--port", type=_port, help="HTTP port (overrides http.port)")


def _policy_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="validate a policy file or explain a decision")
    sub = policy.add_subparsers(dest="policy_command", required=True)
    check = sub.add_parser("check", help="validate a policy file (line-precise errors)")
    check.add_argument("file", type=Path)
    explain = sub.add_parser("explain", help="decide an imagined call and say why")
    explain.add_argument("--config", type=Path, help="config whose [policy] section to use")
    explain.add_argument(
        "--file", type=Path, help="policy file to decide with, instead of [policy] file"
    )
    explain.add_argument("--subject", default="local", help="`local` or an OIDC sub")
    explain.add_argument("--group", action="append", default=[], help="a group (repeatable)")
    explain.add_argument("--scope", action="append", default=[], help="a scope (repeatable)")
    explain.add_argument("--client-id")
    explain.add_argument("--tool", help="the tool (required unless --capabilities)")
    explain.add_argument("--args", default="{}", help="the call's arguments as JSON")
    explain.add_argument("--json", action="store_true")
    explain.add_argument(
        "--capabilities",
        action="store_true",
        help="what the subject may do on the target in --args (vmid, node, pool, path, "
        "toolset): policy and the PVE privileges of the token its calls use (an identity "
        "mapping's for a mapped --subject/--group, else the cluster's)",
    )
    explain.add_argument(
        "--demo", action="store_true", help="--capabilities on the embedded simulator"
    )
    schema = sub.add_parser("schema", help="write the policy file's JSON schema")
    schema.add_argument(
        "--output", type=Path, default=POLICY_SCHEMA_PATH, help="a file, or - for stdout"
    )
    schema.add_argument("--check", action="store_true", help="exit 1 if the file is stale")


def _inventory_parser(commands: Any) -> None:
    inventory = commands.add_parser(
        "inventory",
        help="print an Ansible inventory (YAML or INI) of the cluster's guests, through "
        "the gateway's policy and audit",
    )
    inventory.add_argument("--config", type=Path, help="TOML config file (else PVEMCP_CONFIG)")
    inventory.add_argument(
        "--demo", action="store_true", help="read the embedded simulator instead of a cluster"
    )
    inventory.add_argument("--cluster", help="a configured cluster (default: the default one)")
    inventory.add_argument("--format", choices=["yaml", "ini"], default="yaml")
    inventory.add_argument("--node")
    inventory.add_argument("--pool")
    inventory.add_argument("--tag")
    inventory.add_argument("--status", choices=["running", "stopped", "paused"])
    inventory.add_argument("--type", choices=["qemu", "lxc"])
    inventory.add_argument(
        "--no-ips", action="store_true", help="skip the guest-agent and config reads"
    )
    inventory.add_argument("-o", "--output", type=Path, help="write to this file, not stdout")


def _approvals_parser(commands: Any) -> None:
    approvals = commands.add_parser(
        "approvals", help="list, show, approve or deny calls held for four-eyes approval"
    )
    approvals.add_argument("--config", type=Path, help="TOML config file (else PVEMCP_CONFIG)")
    sub = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = sub.add_parser("list", help="the held calls, oldest first")
    listing.add_argument("--status", choices=["pending", "approved", "denied", "expired", "used"])
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one request with its plan")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    for name in ("approve", "deny"):
        decide = sub.add_parser(name, help=f"{name} a pending request as the local operator")
        decide.add_argument("id")
        decide.add_argument("--reason", required=True, help="why; kept in the audit log")


def _audit_parser(commands: Any) -> None:
    audit = commands.add_parser("audit", help="verify or search the audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain; non-zero on any tampering")
    verify.add_argument("files", nargs="*", type=Path, help="default: the configured log")
    verify.add_argument("--checkpoint", type=Path, help="a checkpoint kept off-host")
    verify.add_argument("--partial", action="store_true", help="older files were pruned")
    verify.add_argument("--evidence-dir", type=Path, help="default: the configured store")
    verify.add_argument("--config", type=Path)
    show = sub.add_parser("show", help="print matching records")
    show.add_argument("files", nargs="*", type=Path, help="default: the configured log")
    for name in ("since", "until", "subject", "tool", "tier", "status", "phase"):
        show.add_argument(f"--{name}")
    show.add_argument("--limit", type=int)
    show.add_argument("--json", action="store_true")
    show.add_argument("--evidence", metavar="SHA256", help="print this evidence blob")
    show.add_argument(
        "--raw", action="store_true", help="with --evidence: exact bytes, even to a terminal"
    )
    show.add_argument("--evidence-dir", type=Path, help="default: the configured store")
    show.add_argument("--config", type=Path)
    report = sub.add_parser("report", help="the risky and escape calls, for a reviewer")
    report.add_argument("files", nargs="*", type=Path, help="default: the configured log")
    report.add_argument("--since", default="24h", help="ISO 8601 or an age (default 24h)")
    report.add_argument("--until")
    report.add_argument("--html", type=Path, help="also write a self-contained HTML file")
    report.add_argument("--config", type=Path)
    checkpoint = sub.add_parser("checkpoint", help="append a checkpoint and print it")
    checkpoint.add_argument("--config", type=Path)


def _enroll_parser(commands: Any) -> None:
    enroll = commands.add_parser(
        "enroll",
        help="create the gateway's own least-privilege PVE user and token (or rotate or "
        "revoke it), pin the node's certificate and print the config to add",
    )
    enroll.add_argument("--url", required=True, help="https://HOST:8006 of any node")
    enroll.add_argument("--profile", choices=["read-only", "operator", "admin"])
    enroll.add_argument("--user", default="pvemcp@pve", help="the gateway's PVE user")
    enroll.add_argument("--token-name", default="gateway")
    enroll.add_argument("--cluster", default="pve", help="the name in [clusters.NAME]")
    enroll.add_argument("--fingerprint", help="expected SHA-256 of the node's certificate")
    enroll.add_argument("--admin-user", default="root@pam", help="who logs in (password asked)")
    enroll.add_argument(
        "--admin-token-file", type=Path, help="a one-time USER@REALM!ID=SECRET instead"
    )
    target = enroll.add_mutually_exclusive_group()
    target.add_argument("--secret-file", type=Path, help="write the secret here (mode 600)")
    target.add_argument("--vault-path", help="or to this KV path in Vault/OpenBao")
    enroll.add_argument("--vault-url")
    enroll.add_argument("--vault-mount", default="secret")
    enroll.add_argument("--vault-kv-version", type=int, choices=[1, 2], default=2)
    enroll.add_argument("--vault-token-file", type=Path, help="a Vault token allowed to write")
    enroll.add_argument("--vault-ca-file", type=Path)
    enroll.add_argument("--revoke", action="store_true", help="delete the token instead")
    enroll.add_argument(
        "--yes", action="store_true", help="with --revoke: also delete the user and role"
    )
    enroll.add_argument("--ssh", action="store_true", help="also pin the node's SSH host key")
    enroll.add_argument("--ssh-node", help="the node's PVE name (with --ssh)")
    enroll.add_argument("--ssh-host", help="its SSH address (default: the --url host)")
    enroll.add_argument("--ssh-port", type=_port, default=22)
    enroll.add_argument("--ssh-fingerprint", help="expected SHA256:... of the host key")
    enroll.add_argument("--known-hosts", type=Path, help="the known_hosts file to pin it in")


def _enroll(args: argparse.Namespace) -> int:
    from pvemcp import enroll

    vault = None
    if args.vault_path is not None:
        if args.vault_url is None or args.vault_token_file is None:
            print(
                "pvemcp enroll: --vault-path needs --vault-url and --vault-token-file",
                file=sys.stderr,
            )
            return 2
        vault = enroll.VaultTarget(
            url=args.vault_url,
            path=args.vault_path,
            token_file=args.vault_token_file,
            mount=args.vault_mount,
            kv_version=args.vault_kv_version,
            ca_file=args.vault_ca_file,
        )
    ssh = None
    if args.ssh:
        if args.ssh_node is None or args.known_hosts is None:
            print("pvemcp enroll: --ssh needs --ssh-node and --known-hosts", file=sys.stderr)
            return 2
        ssh = enroll.SshTarget(
            node=args.ssh_node,
            host=args.ssh_host or (urllib.parse.urlsplit(args.url).hostname or ""),
            known_hosts=args.known_hosts.absolute(),
            port=args.ssh_port,
            fingerprint=args.ssh_fingerprint,
        )
    if args.profile is None and not args.revoke:
        print(
            "pvemcp enroll: --profile is required (read-only, operator or admin)",
            file=sys.stderr,
        )
        return 2
    options = enroll.EnrollOptions(
        url=args.url,
        profile=args.profile or "read-only",
        user=args.user,
        token_name=args.token_name,
        cluster=args.cluster,
        secret_file=args.secret_file.absolute() if args.secret_file else None,
        vault=vault,
        fingerprint=args.fingerprint,
        admin_user=args.admin_user,
        admin_token_file=args.admin_token_file,
        revoke=args.revoke,
        yes=args.yes,
        ssh=ssh,
    )
    return enroll.main(options)


def _policy(args: argparse.Namespace) -> int:
    from pvemcp.policy import commands
    from pvemcp.tools import tier_map

    if args.policy_command == "check":
        return commands.check(args.file, tier_map())
    if args.policy_command == "schema":
        return commands.schema(args.output, check_only=args.check)
    if args.capabilities:
        return _capabilities(args)
    if args.tool is None:
        print("pvemcp policy explain: --tool is required (or --capabilities)", file=sys.stderr)
        return commands.EXIT_INVALID
    policy = _settings(args.config).policy
    return commands.explain(
        tool=args.tool,
        known_tools=tier_map(),
        subject=args.subject,
        groups=args.group,
        scopes=args.scope,
        client_id=args.client_id,
        args_json=args.args,
        profile=policy.profile,
        profile_subjects=policy.profile_subjects,
        file=args.file or policy.file,
        as_json=args.json,
    )


def _capabilities(args: argparse.Namespace) -> int:
    """`policy explain --capabilities`: the proxmox_capabilities_list answer for a subject,
    through a gateway on the configured cluster (or the embedded simulator)."""
    from pvemcp import capabilities_command

    settings = _settings(None if args.demo else args.config)
    if args.file is not None:
        policy = settings.policy.model_copy(update={"file": args.file})
        settings = settings.model_copy(update={"policy": policy})
    return capabilities_command.capabilities(
        settings,
        tool=args.tool,
        subject=args.subject,
        groups=args.group,
        scopes=args.scope,
        client_id=args.client_id,
        args_json=args.args,
        demo=args.demo,
        as_json=args.json,
    )


def _audit(args: argparse.Namespace) -> int:
    from pvemcp.policy import audit_commands
    from pvemcp.policy.evidence import evidence_root

    audit = _settings(args.config).audit
    default_log = audit.path.expanduser()
    store = getattr(args, "evidence_dir", None) or evidence_root(audit)
    if args.audit_command == "verify":
        return audit_commands.verify_command(
            args.files,
            default_log=default_log,
            checkpoint_file=args.checkpoint,
            partial=args.partial,
            evidence_root=store,
        )
    if args.audit_command == "show" and args.evidence is not None:
        return audit_commands.show_evidence_command(
            args.evidence, evidence_root=store, raw=args.raw
        )
    if args.audit_command == "report":
        return audit_commands.report_command(
            args.files,
            default_log=default_log,
            since=args.since,
            until=args.until,
            html_file=args.html,
        )
    if args.audit_command == "show":
        return audit_commands.show_command(
            args.files,
            default_log=default_log,
            since=args.since,
            until=args.until,
            subject=args.subject,
            tool=args.tool,
            tier=args.tier,
            status=args.status,
            phase=args.phase,
            limit=args.limit,
            as_json=args.json,
        )
    return audit_commands.checkpoint_command(audit)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, **overrides)


def _serve(settings: Settings, args: argparse.Namespace, *, simulate: bool) -> int:
    # No garbage collection until the start-up heap is frozen (`_freeze_startup_heap`):
    # importing the SDK and building the gateway triggered about 250 collections, over
    # 100 ms of every stdio client's launch (bench/cold_start.py), to free what is about
    # 0.6 MiB of peak RSS.
    gc.disable()
    try:
        return _serve_now(settings, args, simulate=simulate)
    finally:
        gc.enable()


def _serve_now(settings: Settings, args: argparse.Namespace, *, simulate: bool) -> int:
    from pvemcp.logsetup import configure_logging
    from pvemcp.runtime import open_gateway
    from pvemcp.transports.serve import serve

    overrides = {"host": args.host, "port": args.port}
    http = settings.http.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    # Bind first: a refused configuration or a busy port fails before anything starts.
    listener = None
    if args.mode != "stdio":
        from pvemcp.transports.edge import listen

        listener, http = listen(http)
    redactor = Redactor(key.get_secret_value() for key in settings.http.static_keys.values())
    configure_logging(settings.log_level, redactor)
    if args.mode != "http" and sys.stdin.isatty():
        print(
            "pvemcp is serving MCP on stdin/stdout and waits for an MCP client.\n"
            "Configure your client to start this command (see README.md), or try:\n"
            f"  npx @modelcontextprotocol/inspector --cli {_own_command()} demo "
            "--method tools/list\n"
            "Press Ctrl-D to stop.",
            file=sys.stderr,
        )

    async def run() -> None:
        async with open_gateway(settings, redactor, simulate=simulate) as gateway:
            _freeze_startup_heap()
            await serve(gateway, args.mode, http, listener)

    # uvloop where it is installed (Linux, macOS): ~1.5x the calls/s of the default loop
    # under HTTP load (bench/http_load.py).
    anyio.run(run, backend_options={"use_uvloop": importlib.util.find_spec("uvloop") is not None})
    return 0


def _own_command() -> str:
    """How another program can start this pvemcp: the absolute path of the console script
    beside this Python (a venv's bin/ is rarely on PATH, and a client spawning a bare
    `pvemcp` then fails with ENOENT), else this Python with `-m pvemcp`."""
    script = Path(sys.executable).absolute().parent / "pvemcp"
    if os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(str(Path(sys.executable).absolute()))} -m pvemcp"


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, SDK, schemas, the gateway) out of
    the garbage collector's reach, since it lives as long as the process.

    Each full collection otherwise walks those 120,000-odd objects again: under HTTP load
    that pause was most of the p99 latency (bench/http_load.py, 64 clients: p99 about
    160 ms before, 65 ms after). Objects made later are collected as usual. No collection
    runs first: it would add about 60 ms to every start (stdio clients spawn the server),
    to free the few cycles imports leave behind once.

    Collection, off during the start (`_serve`), resumes here.
    """
    gc.freeze()
    gc.enable()


def _tools(as_json: bool, markdown: bool, readme: bool) -> int:
    from pvemcp import tooldoc

    if as_json:
        print(json.dumps(tooldoc.definitions(), indent=2))
    elif markdown:
        sys.stdout.write(tooldoc.render())
    elif readme:
        sys.stdout.write(tooldoc.readme_table())
    else:
        sys.stdout.write(tooldoc.listing())
    return 0


def _config_show(settings: Settings) -> int:
    clusters = {name: cluster.model_dump() for name, cluster in settings.all_clusters().items()}
    effective: dict[str, Any] = {"clusters": clusters, "default_cluster": settings.default_cluster}
    if not clusters:
        effective["note"] = (
            "no cluster is configured: `pvemcp serve` refuses to start; `pvemcp demo` serves "
            "the embedded simulator"
        )
    for section in ("simulator", "audit", "policy", "tools", "http"):
        effective[section] = getattr(settings, section).model_dump()
    effective["log_level"] = settings.log_level
    print(json.dumps(_redacted(effective), indent=2, default=str))
    return 0


def _redacted(value: Any) -> Any:
    """`value` with every secret setting (token secrets, static keys, the audit HMAC key,
    Vault credentials) masked, wherever it sits."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _config_docs(output: Path, check: bool) -> int:
    from pvemcp.configdoc import render

    text = render()
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            print(f"{output} is stale: run `pvemcp config docs`", file=sys.stderr)
            return 1
        return 0
    if str(output) == "-":
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text)
    except OSError as exc:
        # The default is the checkout's docs/configuration.md, relative to the current
        # directory; elsewhere it cannot (and should not) be written.
        print(
            f"pvemcp: cannot write {output}: {exc.strerror}; outside the pvemcp checkout give "
            "--output FILE, or --output - for stdout",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _approvals(args: argparse.Namespace) -> int:
    from pvemcp import approvals_command

    return approvals_command.run(_settings(args.config), args)


def _inventory(args: argparse.Namespace) -> int:
    from pvemcp import inventory_command

    return inventory_command.run(_settings(None if args.demo else args.config), args)


_BY_ARGS: dict[str, Callable[[argparse.Namespace], int]] = {
    "policy": _policy,
    "audit": _audit,
    "inventory": _inventory,
    "approvals": _approvals,
    "enroll": _enroll,
}
"""The commands that take their parsed arguments whole."""


def main(argv: list[str] | None = None) -> int:
    # asyncssh still names cryptography's deprecated DSA types at import: a warning for its
    # maintainers, printed at every start as the only lines on stderr that are not JSON.
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["simulate"]:
        from pvemcp.simulator.server import main as simulate_main

        return simulate_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        if args.command == "serve":
            settings = _settings(args.config)
            settings.require_cluster()  # before binding a port or starting anything
            return _serve(settings, args, simulate=False)
        if args.command == "demo":
            given = {"time_scale": args.time_scale, "guests": args.guests, "nodes": args.nodes}
            simulator = {key: value for key, value in given.items() if value is not None}
            overrides: dict[str, Any] = {"simulator": simulator} if simulator else {}
            return _serve(_settings(None, **overrides), args, simulate=True)
        if args.command == "tools":
            return _tools(args.json, args.markdown, args.readme)
        by_args = _BY_ARGS.get(args.command)
        if by_args is not None:
            return by_args(args)
        if args.command == "secrets":
            from pvemcp.secrets import commands as secrets_commands

            return secrets_commands.check(_settings(args.config))
        if args.command == "config" and args.config_command == "show":
            return _config_show(_settings(args.config))
        if args.command == "config" and args.config_command == "docs":
            return _config_docs(args.output, args.check)
    except ConfigError as exc:
        print(f"pvemcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
