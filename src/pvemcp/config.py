"""Configuration models: the single source of truth for every setting.

Env variables (prefix ``PVEMCP_``) describe one cluster, the simple case; a TOML file
(``PVEMCP_CONFIG`` or ``--config``) describes several named clusters. The models here also
generate ``docs/configuration.md``, so a setting that is not declared here does not exist.

Every default is the safe one: TLS verification on, the audit log on, no cluster means
`pvemcp serve` refuses to start (never a guess at a real host, never a silent simulator).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import urllib.parse
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from pvemcp.secrets.models import CredentialsConfig, IdentityMapping, InlineCredentials
from pvemcp.secrets.types import TOKEN_ID_RE

FINGERPRINT_RE = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{64}$")
CLUSTER_NAME_RE = r"^[a-z][a-z0-9_-]{0,31}$"
STATIC_KEY_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"


def is_loopback_host(host: str | None) -> bool:
    """Whether `host` is this machine: an IP loopback literal or `localhost`. Only these may
    be reached by plain http or served without OIDC; any other name could resolve anywhere."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook target (`None` if it can): only absolute http(s)
    URLs with a host, since anything else (`file:`, `ftp:`, a relative path) is either not
    an HTTP endpoint or a way to make the gateway read something it should not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL (got scheme {parts.scheme!r})"
    if not parts.hostname:
        return "must name a host"
    return None


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the setting and the fix."""


class TlsMode(StrEnum):
    """How the Proxmox API certificate is checked."""

    SYSTEM = "system"
    CA_FILE = "ca-file"
    FINGERPRINT = "fingerprint"
    INSECURE = "insecure"


class SshConfig(BaseModel):
    """How the gateway reaches a cluster's nodes over SSH (pvesh, CLI, shell, file tools).

    Credentials (user, key, expected host keys) come from the cluster's `credentials`;
    this section says where the nodes are and how much a command may do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: Annotated[
        # Node names are plain DNS labels, as PVE requires (and the SSH pool checks).
        dict[
            Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")],
            str,
        ],
        Field(
            description="Node name -> SSH address (`host` or `host:port`). A node not listed "
            "is reached at its own name on `port` if the cluster reports it (GET /nodes); "
            "any other name is refused.",
        ),
    ] = {}
    port: Annotated[int, Field(ge=1, le=65535, description="Default SSH port.")] = 22
    known_hosts: Annotated[
        Path | None,
        Field(
            description="known_hosts file with the nodes' pinned host keys, in addition to "
            "the expected keys from the credentials. Unknown or changed keys are refused.",
        ),
    ] = None
    connect_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    login_timeout: Annotated[float, Field(gt=0, le=120)] = 15.0
    command_timeout: Annotated[
        float,
        Field(
            ge=1,
            le=86_400,
            description="Default seconds a remote command may run (at least 1).",
        ),
    ] = 60.0
    keepalive_interval: Annotated[float, Field(ge=0, le=600)] = 15.0
    max_channels: Annotated[
        int,
        Field(
            ge=1,
            le=64,
            description="Concurrent channels per node connection; keep below sshd MaxSessions "
            "(default 10).",
        ),
    ] = 8
    output_cap: Annotated[
        int,
        Field(
            ge=1024,
            description="Bytes of stdout/stderr returned inline; the rest is kept as an "
            "artifact resource.",
        ),
    ] = 64 * 1024
    artifact_max_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    artifact_ttl: Annotated[float, Field(gt=0, description="Seconds an artifact is kept.")] = 900
    backend: Annotated[
        Literal["rest", "pvesh"],
        Field(
            description="Route typed API calls through REST (default) or `pvesh` over SSH "
            "(for sites that expose SSH but not port 8006).",
        ),
    ] = "rest"
    pvesh_command: Annotated[
        list[str],
        Field(
            min_length=1,
            description='argv that starts pvesh on a node: `["pvesh"]` for a root login, '
            '`["sudo", "-n", "/usr/bin/pvesh"]` for a dedicated user (see docs/ssh.md).',
        ),
    ] = ["pvesh"]
    cli_prefix: Annotated[
        list[str],
        Field(
            description="argv prefix for the Proxmox commands the escape tools run "
            '(proxmox_cli_run, proxmox_ct_exec): `["sudo", "-n"]` for a dedicated user. '
            "Policy `argv` rules see the command without it.",
        ),
    ] = []
    file_max_bytes: Annotated[
        int,
        Field(
            ge=1024,
            le=64 * 1024 * 1024,
            description="Largest file proxmox_file_read reads or proxmox_file_write writes "
            "(or replaces); bigger ones are refused.",
        ),
    ] = 1024 * 1024


class ClusterConfig(BaseModel):
    """One Proxmox VE cluster the gateway may talk to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: Annotated[
        str,
        Field(
            description="Base URL of any node's API, e.g. `https://pve1.example.com:8006`. "
            "The `/api2/json` suffix is added by the client.",
        ),
    ]
    token_id: Annotated[
        str | None,
        Field(description="API token id, `user@realm!tokenid`."),
    ] = None
    token_secret: Annotated[
        SecretStr | None,
        Field(description="API token secret (a UUID). Never printed or logged."),
    ] = None
    tls: Annotated[
        TlsMode,
        Field(
            description="Certificate check: `system` (OS trust store), `ca-file` (a PEM "
            "bundle in `ca_file`), `fingerprint` (pin the SHA-256 of the leaf certificate in "
            "`fingerprint`) or `insecure` (no check; logs a warning at every start).",
        ),
    ] = TlsMode.SYSTEM
    ca_file: Annotated[
        Path | None, Field(description='PEM CA bundle, required when `tls = "ca-file"`.')
    ] = None
    fingerprint: Annotated[
        str | None,
        Field(
            description="SHA-256 fingerprint of the API certificate (`AA:BB:...` or 64 hex "
            'digits), required when `tls = "fingerprint"`.',
        ),
    ] = None
    default_node: Annotated[
        str | None, Field(description="Node used when a tool needs one and none is given.")
    ] = None
    default_storage: Annotated[
        str | None, Field(description="Storage used when a tool needs one and none is given.")
    ] = None
    default_backup_storage: Annotated[
        str | None,
        Field(description="Storage (with `backup` content) that backups go to by default."),
    ] = None
    default_bridge: Annotated[
        str | None, Field(description="Bridge used for new network devices by default.")
    ] = None
    snapshot_before_change: Annotated[
        bool,
        Field(
            description="Take a snapshot before every guest config change and disk move, as "
            "if the caller gave `snapshot_first`; a guest PVE cannot snapshot (a template, a "
            "raw disk on a directory) then cannot be changed so through the gateway."
        ),
    ] = False
    download_hosts: Annotated[
        list[str],
        Field(
            description="The hosts a URL download (`proxmox_storage_download`) may come "
            "from: exact names or IP addresses, or `*.example.org` for any subdomain. "
            "Empty: any host whose addresses are all public."
        ),
    ] = []
    download_internal_hosts: Annotated[
        list[str],
        Field(
            description="Hosts a URL download may name although they are or resolve to a "
            "loopback, private, link-local or other non-public address (a mirror on the "
            "LAN): exact names or IP addresses. Empty: public addresses only."
        ),
    ] = []
    api_schema: Annotated[
        Path | None,
        Field(
            description="The PVE API schema of this cluster's version when it is not the "
            "shipped PVE 9.2 one: the JSON array of pve-docs' `apidoc.js`, or an index as "
            "`scripts/gen_pveapi_index.py` writes it (at most 64 MiB). Every request, and "
            "the generic API tools' paths and parameters, are checked against it. Set, it "
            "wins over the node's own schema (`api_schema_fetch`)."
        ),
    ] = None
    api_schema_fetch: Annotated[
        bool,
        Field(
            description="On the first call, read the node's PVE version (`GET /version`) and "
            "use the API schema the node serves (`/pve-docs/api-viewer/apidoc.js`, with its "
            "descriptions), cached per version in `api_schema_cache_dir`. On by default: "
            "requests are then checked against the node's own version, not the shipped 9.2 "
            "one. A fetch that fails falls back to the shipped schema with one warning. "
            "REST clusters only (a pvesh cluster uses `api_schema` or the shipped one)."
        ),
    ] = True
    api_schema_cache_dir: Annotated[
        Path,
        Field(
            description="Where fetched node schemas are kept, one 0600 file per PVE version "
            "(`pve-<version>-<sha256>.index.json.gz`), so a restart does not fetch again."
        ),
    ] = Path("~/.cache/pvemcp/pve-api")
    api_schema_max_bytes: Annotated[
        int,
        Field(
            ge=64 * 1024,
            le=64 * 1024 * 1024,
            description="Largest `apidoc.js` the gateway reads (PVE 9.2's is 2.3 MB); a "
            "bigger one is not used (the shipped schema is, with a warning).",
        ),
    ] = 16 * 1024 * 1024
    api_schema_timeout: Annotated[
        float,
        Field(
            gt=0,
            le=600,
            description="Seconds the schema fetch may take in all; then the shipped schema is "
            "used (with a warning) and the call goes on.",
        ),
    ] = 30.0
    connect_timeout: Annotated[
        float, Field(gt=0, le=120, description="Seconds to establish a connection.")
    ] = 5.0
    read_timeout: Annotated[
        float,
        Field(
            gt=0,
            le=600,
            description="Seconds to wait for the next bytes of an API response (a gap, "
            "not the whole answer: see `request_timeout`).",
        ),
    ] = 30.0
    request_timeout: Annotated[
        float | None,
        Field(
            gt=0,
            le=3600,
            description="Seconds one API request may take in all: connecting, sending and "
            "reading the whole answer, so a server that trickles bytes cannot hold a call. "
            "At least `read_timeout`; unset = twice `read_timeout`.",
        ),
    ] = None
    max_response_bytes: Annotated[
        int,
        Field(
            ge=64 * 1024,
            le=1024 * 1024 * 1024,
            description="Largest API answer the gateway reads, in bytes (after decompression); "
            "reading stops there and the call fails with `upstream_answer_too_large`. "
            "Bounds the memory an odd or hostile answer can take.",
        ),
    ] = 8 * 1024 * 1024
    task_timeout: Annotated[
        float,
        Field(gt=0, le=86_400, description="Default seconds a tool waits for a Proxmox task."),
    ] = 600.0
    retries: Annotated[
        int,
        Field(
            ge=0,
            le=10,
            description="Retries for idempotent GETs on connection errors (with backoff).",
        ),
    ] = 2
    read_cache_ttl: Annotated[
        float,
        Field(
            ge=0,
            le=60,
            description="Seconds a read tool may reuse an identical API read's answer "
            "(identical reads in flight always share one request; 0 turns reuse off). "
            "Risky calls and task waits on the cluster empty the cache; planners, risky "
            "tools and task polling always read fresh.",
        ),
    ] = 1.0
    ssh: Annotated[
        SshConfig | None,
        Field(description="SSH access to the nodes; unset = no SSH tools for this cluster."),
    ] = None
    credentials: Annotated[
        CredentialsConfig,
        Field(
            description="Where the API token (and SSH credentials) come from: a table with "
            "`source` = `inline` (token_id / token_secret above), `env`, `file` or `vault`. "
            "See docs/secrets.md.",
        ),
    ] = InlineCredentials()
    identities: Annotated[
        list[IdentityMapping],
        Field(
            description="Callers with their own PVE API token (`[[clusters.NAME.identities]]`: "
            "`name`, `principal` = `sub:NAME` or `group:NAME`, `token_id`, `credentials`); "
            "the first match wins, everyone else uses the gateway token. A mapping whose "
            "secret cannot be loaded refuses its caller's calls. See docs/secrets.md.",
        ),
    ] = []

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value.endswith("/api2/json"):
            value = value[: -len("/api2/json")]
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (for example https://pve1:8006)")
        if value.startswith("http://"):
            host = urllib.parse.urlsplit(value).hostname or ""
            if not is_loopback_host(host):
                raise ValueError(
                    "plain http:// would send the API token in cleartext; use https:// "
                    "(http:// is accepted only for 127.0.0.1, ::1 and localhost)"
                )
        return value

    @field_validator("token_id")
    @classmethod
    def _check_token_id(cls, value: str | None) -> str | None:
        if value is not None and not TOKEN_ID_RE.match(value):
            raise ValueError("must look like user@realm!tokenid (for example pvemcp@pve!gateway)")
        return value

    @field_validator("fingerprint")
    @classmethod
    def _check_fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not FINGERPRINT_RE.match(value):
            raise ValueError("must be a SHA-256 fingerprint: 32 hex bytes, colons optional")
        return value.replace(":", "").lower()

    @property
    def request_deadline(self) -> float:
        """The total seconds one API request may take (`request_timeout` or its default)."""
        return self.request_timeout if self.request_timeout is not None else 2 * self.read_timeout

    @model_validator(mode="after")
    def _check_timeouts(self) -> Self:
        if self.request_timeout is not None and self.request_timeout < self.read_timeout:
            raise ValueError(
                f"request_timeout ({self.request_timeout:g} s) must be at least read_timeout "
                f"({self.read_timeout:g} s): it bounds the whole answer, read_timeout one gap"
            )
        return self

    @model_validator(mode="after")
    def _check_identities(self) -> Self:
        names = [mapping.name for mapping in self.identities]
        if len(set(names)) != len(names):
            raise ValueError("identities: each mapping needs a name of its own")
        if self.identities and self.ssh is not None and self.ssh.backend == "pvesh":
            raise ValueError(
                "identities need the REST backend: with ssh.backend = 'pvesh' every call "
                "runs as root on the node, so a caller's own token could not apply"
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if self.tls is TlsMode.CA_FILE and self.ca_file is None:
            raise ValueError("tls = 'ca-file' needs ca_file")
        if self.tls is TlsMode.FINGERPRINT and self.fingerprint is None:
            raise ValueError("tls = 'fingerprint' needs fingerprint")
        if self.credentials.source == "inline":
            if (self.token_id is None) != (self.token_secret is None):
                raise ValueError("token_id and token_secret go together: set both or neither")
        elif self.token_secret is not None:
            raise ValueError(
                f"token_secret is set here but credentials.source is "
                f"'{self.credentials.source}': keep the secret in one place (remove "
                "token_secret; token_id may stay as the default token id)"
            )
        return self


class SimulatorConfig(BaseModel):
    """The embedded simulator `pvemcp demo` serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_scale: Annotated[
        float,
        Field(
            ge=0,
            le=100,
            description="Multiplier on realistic task durations: 1 = real time (a VM start "
            "takes a few seconds), 0 = tasks finish at once.",
        ),
    ] = 0.2
    seed: Annotated[int, Field(description="Seed for the demo cluster's generated data.")] = 1
    guests: Annotated[
        int | None,
        Field(
            description="Grow the demo cluster to this many guests (14 to 100,000; generated "
            "ones on added nodes); unset: the demo's 14.",
        ),
    ] = None
    nodes: Annotated[
        int | None,
        Field(description="Grow the demo cluster to this many nodes (3 to 200); unset: 3."),
    ] = None


class AuditConfig(BaseModel):
    """Where the audit log goes, and how it is protected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[
        Path,
        Field(description="JSON-lines audit log; its directory is created with mode 0700."),
    ] = Path("~/.local/state/pvemcp/audit.jsonl")
    enabled: Annotated[
        bool,
        Field(
            description="Write the audit log. When false, calls above the `read` tier are "
            "refused, since they would run unrecorded.",
        ),
    ] = True
    rotate_bytes: Annotated[
        int,
        Field(
            ge=0,
            description="Rotate the log when it reaches this size (0 = never); the hash chain "
            "continues into the next file.",
        ),
    ] = 64 * 1024 * 1024
    checkpoint_every: Annotated[
        int,
        Field(ge=0, description="Write a checkpoint record every N records (0 = never)."),
    ] = 1000
    hmac_key: Annotated[
        SecretStr | None,
        Field(
            description="Key for `args_hmac`, an HMAC-SHA256 of each call's raw arguments, so "
            "a known value can be tested later without storing it. Unset = no HMAC.",
        ),
    ] = None
    syslog: Annotated[
        str | None,
        Field(
            description="Also send each record to syslog: `unix:/dev/log`, `udp:HOST:PORT` or "
            "`tcp:HOST:PORT`. Unset = file only.",
        ),
    ] = None
    require_for_reads: Annotated[
        bool,
        Field(
            description="Refuse reads (and every other answer) whose audit record cannot be "
            'written, for a rule of "nothing unrecorded". False: while the log cannot be '
            "written, reads still answer, unrecorded but logged and counted; risky calls are "
            "refused either way.",
        ),
    ] = False
    evidence: Annotated[
        bool,
        Field(
            description="Keep the full output of escape calls (stdout, stderr, file content "
            "and diffs), redacted, in the evidence store; the outcome record lists each "
            "blob's SHA-256. When true and the store cannot be written, escape calls are "
            "refused.",
        ),
    ] = True
    evidence_dir: Annotated[
        Path | None,
        Field(description="The evidence store's directory. Unset = `evidence/` beside `path`."),
    ] = None
    evidence_max_blob_bytes: Annotated[
        int,
        Field(
            ge=1,
            description="Keep at most this many bytes of each output or file; the rest is cut "
            "and the record says `truncated`.",
        ),
    ] = 16 * 1024 * 1024
    evidence_max_total_bytes: Annotated[
        int,
        Field(
            ge=1,
            description="The store's size cap: when full, escape calls are refused until "
            "retention frees space.",
        ),
    ] = 1024 * 1024 * 1024
    evidence_min_free_bytes: Annotated[
        int,
        Field(
            ge=0,
            description="Refuse escape calls when the store's disk has less free space.",
        ),
    ] = 256 * 1024 * 1024
    evidence_retention_days: Annotated[
        float,
        Field(
            ge=0,
            description="Delete blobs unused for this many days (0 = keep forever); the "
            "deletion is an `evidence_pruned` audit record.",
        ),
    ] = 90


class PolicyConfig(BaseModel):
    """Who may call what. See docs/policy.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Annotated[
        Literal["read-only", "operator", "admin"],
        Field(
            description="Built-in profile granted to `profile_subjects`: `read-only`, "
            "`operator` (power actions; destructive calls need confirmation) or `admin` (all "
            "but escape). None of them grants `escape`.",
        ),
    ] = "operator"
    profile_subjects: Annotated[
        list[str],
        Field(
            description="Subjects the profile applies to; `local` is the stdio operator. Other "
            "callers get reads only, unless the policy file says more.",
        ),
    ] = ["local"]
    file: Annotated[
        Path | None,
        Field(description="Policy file (TOML) with rules; see docs/policy.md."),
    ] = None
    confirm_ttl: Annotated[
        int,
        Field(ge=30, le=3600, description="Seconds a confirmation token stays valid."),
    ] = 300
    token_confirmation: Annotated[
        bool,
        Field(
            description="When the client cannot be asked through MCP elicitation, return the "
            "plan and a single-use token for a second call. The caller holding the token can "
            "redeem it, so this trusts the client to show the plan to a person; false = calls "
            "that need confirmation run only after an elicitation accept.",
        ),
    ] = True


class ApprovalsConfig(BaseModel):
    """Four-eyes approval of calls a policy `approve` rule holds. See docs/policy.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Annotated[
        Path | None,
        Field(
            description="The approval store: one 0600 file per held call in a 0700 "
            "directory, shared with `pvemcp approvals` on this machine. Unset = `approvals/` "
            "beside the audit log (`[audit] path`).",
        ),
    ] = None
    ttl: Annotated[
        int,
        Field(
            ge=60,
            le=7 * 86400,
            description="Seconds a held call may wait for its approval and, once approved, "
            "for its re-sent call; then it expires.",
        ),
    ] = 3600
    webhook_url: Annotated[
        SecretStr | None,
        Field(
            description="POST a notification here when a call is held and when it is "
            "approved, denied or expired (http:// or https:// only). Kept secret: chat "
            "webhook URLs are credentials; logs name only the host. Unset = no webhook.",
        ),
    ] = None
    webhook_format: Annotated[
        Literal["generic", "slack", "teams"],
        Field(
            description="`generic` (JSON: id, tool, cluster, target, plan summary, "
            "requester, approvers, expires, links), `slack` (text + blocks) or `teams` "
            "(an Adaptive Card).",
        ),
    ] = "generic"
    webhook_secret: Annotated[
        SecretStr | None,
        Field(
            description="HMAC-SHA256 key signing each post (`X-Pvemcp-Signature: "
            "t=UNIX,v1=HEX` over `UNIX.BODY`). Required for `generic`; or use "
            "`webhook_secret_file`.",
        ),
    ] = None
    webhook_secret_file: Annotated[
        Path | None,
        Field(description="File (mode 600) holding the signing key instead."),
    ] = None
    webhook_timeout: Annotated[
        float, Field(gt=0, le=60, description="Seconds one delivery attempt may take.")
    ] = 5.0
    webhook_attempts: Annotated[
        int,
        Field(
            ge=1,
            le=10,
            description="Attempts per notification (pauses 1 s, 2 s, 4 s ... between); a "
            "notification that fails them all is logged and audited, then dropped. The held "
            "call never waits on it.",
        ),
    ] = 3

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        problem = webhook_url_problem(value.get_secret_value()) if value else None
        if problem is not None:
            raise ValueError(f"the webhook URL {problem}")
        return value

    def store_directory(self, audit: AuditConfig) -> Path:
        """Where the store is: `directory`, or `approvals/` beside the audit log."""
        chosen = self.directory or audit.path.expanduser().parent / "approvals"
        return chosen.expanduser()


class ToolsConfig(BaseModel):
    """Which tools the gateway serves. See docs/tools.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    toolsets: Annotated[
        list[str],
        Field(
            description="Toolsets every caller has enabled (`all` = every one); a client can "
            "enable another for its session with `proxmox_toolset_enable`. `core` is always "
            "enabled. Policy still decides each tool.",
        ),
    ] = ["core", "guests", "tasks", "snapshots", "escape"]
    # What an operator does every day, within the tools/list budget (33,000 bytes, tested);
    # disks, cloud-init and the guest agent are one proxmox_toolset_enable away. Escape is
    # in it because its tools stay hidden until a policy rule names the caller and the tool:
    # leaving it out would make such a rule grant nothing.

    @field_validator("toolsets")
    @classmethod
    def _known_toolsets(cls, value: list[str]) -> list[str]:
        # Imported here: the catalogue imports the gateway, which imports this module.
        from pvemcp.tools import TOOLSET_NAMES  # noqa: PLC0415

        if "all" in value:
            return list(TOOLSET_NAMES)
        unknown = [name for name in value if name not in TOOLSET_NAMES]
        if unknown:
            raise ValueError(
                f"unknown toolset {', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(TOOLSET_NAMES)} or all"
            )
        return ["core", *(name for name in TOOLSET_NAMES if name in value and name != "core")]


def _toml_source(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (set by PVEMCP_CONFIG or --config)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


class OidcConfig(BaseModel):
    """The OpenID provider whose access tokens HTTP callers present (see docs/remote.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Annotated[
        str | None,
        Field(description="Issuer URL, compared exactly with each token's `iss`."),
    ] = None
    jwks_url: Annotated[
        str | None,
        Field(description="JWKS URL; default: discovered from the issuer's metadata."),
    ] = None
    audience: Annotated[
        str | None,
        Field(
            description="Audience a token's `aud` must contain; default: this server's "
            "resource URL (`http.public_url`).",
        ),
    ] = None
    accepted_typ: Annotated[
        list[str],
        Field(description="Accepted JWT `typ` headers (RFC 9068 access tokens by default)."),
    ] = ["at+jwt", "application/at+jwt"]
    algorithms: Annotated[
        list[Literal["RS256", "PS256", "ES256", "EdDSA"]],
        Field(description="Signature algorithms accepted (asymmetric only)."),
    ] = ["RS256", "PS256", "ES256", "EdDSA"]
    leeway: Annotated[
        int, Field(ge=0, le=60, description="Clock skew allowed on exp/nbf/iat, seconds.")
    ] = 30
    required_scopes: Annotated[
        list[str],
        Field(description="Scopes every token must carry (403 insufficient_scope otherwise)."),
    ] = []
    groups_claim: Annotated[
        str, Field(description="Claim holding the caller's groups, for policy `group:` rules.")
    ] = "groups"
    ca_file: Annotated[
        Path | None, Field(description="CA bundle for the issuer and JWKS URLs.")
    ] = None
    jwks_ttl: Annotated[
        int, Field(ge=10, le=86_400, description="Seconds JWKS keys are cached (max).")
    ] = 600
    jwks_refresh_cooldown: Annotated[
        int,
        Field(ge=1, le=3600, description="Minimum seconds between refetches for unknown kids."),
    ] = 30


class HttpConfig(BaseModel):
    """The streamable HTTP transport (`pvemcp serve --mode http|both`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Annotated[str, Field(description="Bind address; loopback by default.")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_-]*$", description="MCP endpoint.")] = "/mcp"
    public_url: Annotated[
        str | None,
        Field(
            description="The URL clients use for the MCP endpoint (the OAuth resource URI); "
            "default `http://HOST:PORT/PATH`.",
        ),
    ] = None
    auth: Annotated[
        Literal["oidc", "static", "none"],
        Field(
            description="`oidc` (required off loopback), `static` bearer keys (loopback, "
            "development) or `none` (loopback only, with allow_unauthenticated).",
        ),
    ] = "oidc"
    static_keys: Annotated[
        dict[Annotated[str, Field(pattern=STATIC_KEY_NAME_RE)], SecretStr],
        Field(
            description='Bearer keys for `auth = "static"`, by name: `{me = "KEY"}`; the '
            "holder of key NAME is the subject `static:NAME` (policy selector "
            "`sub:static:NAME`). Env: `PVEMCP_HTTP__STATIC_KEYS__NAME=KEY` (NAME in lower "
            "case) or JSON. A list of keys (older form) names them by position: `static:0`, "
            "... Compared in constant time.",
        ),
    ] = {}
    allow_unauthenticated: Annotated[
        bool, Field(description='Permit `auth = "none"` (only on a loopback bind).')
    ] = False
    oidc: OidcConfig = OidcConfig()
    stateless: Annotated[
        bool,
        Field(description="Stateless streamable HTTP, for several replicas behind a balancer."),
    ] = False
    response_mode: Annotated[
        Literal["auto", "sse", "json"],
        Field(
            description="How requests are answered: `auto` gives one JSON body to calls "
            "that can receive nothing but their result (reads without a progress token, "
            "tools/list, ...) and an SSE stream to the rest (progress, confirmation by "
            "elicitation); `sse` streams every answer; `json` never streams (no progress "
            "notifications; 2025-11-25 and older clients confirm by the two-step token).",
        ),
    ] = "auto"
    allowed_hosts: Annotated[
        list[str],
        Field(description="Accepted Host headers (DNS-rebinding guard); default: the bind."),
    ] = []
    allowed_origins: Annotated[
        list[str], Field(description="Accepted Origin headers; requests without one pass.")
    ] = []
    max_body_bytes: Annotated[int, Field(ge=1024, le=4 * 1024 * 1024)] = 1024 * 1024
    request_timeout: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="Seconds one HTTP request may take: a response not started by then "
            "is 504; a streamed (SSE) response still open is ended with a JSON-RPC error.",
        ),
    ] = 120.0
    rate_limit_per_minute: Annotated[
        int,
        Field(
            ge=0,
            description="Requests per caller per minute (0 = unlimited); the caller is the "
            "verified subject, else the normalised token, else the client address.",
        ),
    ] = 1200
    rate_limit_burst: Annotated[
        int,
        Field(
            ge=1,
            description="Requests a caller may send at once: a client's start (initialize, "
            "lists, a burst of calls) must fit.",
        ),
    ] = 120
    auth_failures_per_minute: Annotated[
        int,
        Field(
            ge=0,
            description="Failed authentications per client address per minute (0 = no "
            "limit); past it, requests without a known-good token get 429.",
        ),
    ] = 30
    auth_failures_burst: Annotated[
        int, Field(ge=1, description="Failed authentications one address may have at once.")
    ] = 10
    auth_failures_total_per_minute: Annotated[
        int,
        Field(
            ge=0,
            description="Failed authentications per minute from all addresses together "
            "(0 = no limit; ten seconds' worth at once).",
        ),
    ] = 600
    max_header_bytes: Annotated[
        int,
        Field(
            ge=1024,
            le=1024 * 1024,
            description="Largest request head (request line and headers); the connection is "
            "closed with 431 past it.",
        ),
    ] = 64 * 1024
    max_headers: Annotated[
        int, Field(ge=8, le=1000, description="Most header fields in one request (431 past it).")
    ] = 100
    head_timeout: Annotated[
        float,
        Field(
            gt=0,
            le=300,
            description="Seconds from a connection's first byte (or its opening) to the end "
            "of the request head; slower clients are disconnected.",
        ),
    ] = 10.0
    keep_alive_timeout: Annotated[
        int,
        Field(ge=1, le=600, description="Seconds an idle keep-alive connection stays open."),
    ] = 5
    max_connections: Annotated[
        int,
        Field(ge=1, description="Open connections at once; further ones get 503 and are closed."),
    ] = 1000
    max_sessions: Annotated[
        int,
        Field(
            ge=1,
            description="Open MCP sessions (stateful mode) at once; past it new sessions get 503.",
        ),
    ] = 1000
    max_sessions_per_principal: Annotated[
        int,
        Field(
            ge=1,
            description="Open MCP sessions of one caller; a new one past it closes that "
            "caller's longest idle session (429 if none is idle).",
        ),
    ] = 16
    session_idle_timeout: Annotated[
        float,
        Field(
            gt=0,
            le=86_400,
            description="Seconds a session may go without a request in flight before it is "
            "closed (its id then answers 404).",
        ),
    ] = 600.0
    tls_cert_file: Annotated[Path | None, Field(description="Serve HTTPS with this cert.")] = None
    tls_key_file: Annotated[Path | None, Field(description="Private key for tls_cert_file.")] = None
    trusted_proxies: Annotated[
        list[str],
        Field(
            description="Addresses/CIDRs whose X-Forwarded-For/-Proto are believed; others' "
            "forwarded headers are ignored.",
        ),
    ] = []

    @field_validator("static_keys", mode="before")
    @classmethod
    def _name_listed_keys(cls, value: object) -> object:
        """The older list form: each key is named by its position (`static:0`, ...)."""
        if isinstance(value, list):
            return {str(index): key for index, key in enumerate(value)}
        return value


class Settings(BaseSettings):
    """Everything the gateway reads at start.

    Env: `PVEMCP_API_URL`, `PVEMCP_TOKEN_ID`, `PVEMCP_TOKEN_SECRET`, `PVEMCP_TLS`, ... set
    the cluster named `default`; a TOML file adds `[clusters.NAME]` tables.
    """

    model_config = SettingsConfigDict(
        env_prefix="PVEMCP_", extra="forbid", env_nested_delimiter="__", frozen=True
    )

    config: Annotated[
        Path | None,
        Field(description="TOML file with `[clusters.NAME]` tables and the other sections."),
    ] = None
    api_url: Annotated[
        str | None, Field(description="One-cluster shortcut: the `default` cluster's API URL.")
    ] = None
    token_id: Annotated[str | None, Field(description="One-cluster shortcut: token id.")] = None
    token_secret: Annotated[
        SecretStr | None, Field(description="One-cluster shortcut: token secret.")
    ] = None
    tls: Annotated[TlsMode, Field(description="One-cluster shortcut: TLS mode.")] = TlsMode.SYSTEM
    ca_file: Annotated[Path | None, Field(description="One-cluster shortcut: CA bundle.")] = None
    fingerprint: Annotated[
        str | None, Field(description="One-cluster shortcut: certificate fingerprint.")
    ] = None
    default_node: Annotated[
        str | None, Field(description="One-cluster shortcut: default node.")
    ] = None
    default_storage: Annotated[
        str | None, Field(description="One-cluster shortcut: default storage.")
    ] = None
    default_backup_storage: Annotated[
        str | None, Field(description="One-cluster shortcut: default backup storage.")
    ] = None
    default_bridge: Annotated[
        str | None, Field(description="One-cluster shortcut: default bridge.")
    ] = None
    credentials: Annotated[
        CredentialsConfig | None,
        Field(
            description="One-cluster shortcut: where the `default` cluster's credentials "
            "come from (`PVEMCP_CREDENTIALS__SOURCE=vault`, ...; see docs/secrets.md). "
            "Unset = `PVEMCP_TOKEN_ID` / `PVEMCP_TOKEN_SECRET`.",
        ),
    ] = None

    clusters: Annotated[
        dict[Annotated[str, Field(pattern=CLUSTER_NAME_RE)], ClusterConfig],
        Field(description="Named clusters (TOML `[clusters.NAME]`)."),
    ] = {}
    default_cluster: Annotated[
        str | None,
        Field(description="Cluster used when a tool call names none; defaults to the only one."),
    ] = None
    simulator: SimulatorConfig = SimulatorConfig()
    audit: AuditConfig = AuditConfig()
    policy: PolicyConfig = PolicyConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    tools: ToolsConfig = ToolsConfig()
    http: HttpConfig = HttpConfig()
    log_level: Annotated[
        str, Field(pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Log level on stderr.")
    ] = "INFO"

    @model_validator(mode="after")
    def _check_default(self) -> Self:
        try:
            self.env_cluster()
        except ValidationError as exc:
            raise ValueError(_env_cluster_problems(exc)) from None
        if self.credentials is not None and self.api_url is None:
            raise ValueError(
                "credentials is a one-cluster shortcut and needs api_url (PVEMCP_API_URL); "
                "for named clusters put it under [clusters.NAME.credentials]"
            )
        if self.default_cluster is not None and self.default_cluster not in self.all_clusters():
            raise ValueError(
                f"default_cluster {self.default_cluster!r} is not one of the configured clusters"
            )
        return self

    def env_cluster(self) -> ClusterConfig | None:
        """The cluster described by the one-cluster env shortcuts, if any."""
        if self.api_url is None:
            return None
        credentials = self.credentials or InlineCredentials()
        return ClusterConfig(
            api_url=self.api_url,
            token_id=self.token_id,
            # With another source, PVEMCP_TOKEN_SECRET is that source's business (the env
            # source re-reads it); token_id stays as the default token id.
            token_secret=self.token_secret if credentials.source == "inline" else None,
            credentials=credentials,
            tls=self.tls,
            ca_file=self.ca_file,
            fingerprint=self.fingerprint,
            default_node=self.default_node,
            default_storage=self.default_storage,
            default_backup_storage=self.default_backup_storage,
            default_bridge=self.default_bridge,
        )

    def all_clusters(self) -> dict[str, ClusterConfig]:
        """Named clusters from the file plus `default` from env (env wins for `default`)."""
        merged = dict(self.clusters)
        env = self.env_cluster()
        if env is not None:
            merged["default"] = env
        return merged

    def uses_simulator(self) -> bool:
        """True when no cluster is configured: only `pvemcp demo` (the embedded simulator)
        can serve these settings."""
        return not self.all_clusters()

    def require_cluster(self) -> None:
        """Refuse settings with no cluster, naming what was looked for: `serve` fails closed
        rather than serve the simulator in place of a cluster someone meant to configure.

        A misspelt variable is the usual cause, so `PVEMCP_*` variables that name no setting
        are listed.
        """
        if not self.uses_simulator():
            return
        where = (
            f"{self.config} has no [clusters.NAME] table and PVEMCP_API_URL is not set"
            if self.config is not None
            else "PVEMCP_API_URL is not set and neither PVEMCP_CONFIG nor --config names a file"
        )
        unknown = unknown_env_names()
        if unknown:
            where += f"; {', '.join(unknown)} is set but names no setting"
        raise ConfigError(
            f"no Proxmox cluster is configured: {where}; `pvemcp demo` serves the embedded "
            "simulator"
        )


def unknown_env_names() -> list[str]:
    """`PVEMCP_*` variables that no setting reads (the env source ignores them silently)."""
    fields = {name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith("PVEMCP_")
        and name.upper().removeprefix("PVEMCP_").split("__")[0] not in fields
    )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read env and (optionally) a TOML file into validated settings.

    A TOML file's values are the base; env variables override them setting by setting, so
    `PVEMCP_CLUSTERS__PROD__TOKEN_SECRET` completes the file's `[clusters.prod]`, whether the
    file comes from `config_file` (`--config`) or `PVEMCP_CONFIG`. Errors are
    raised as `ConfigError` naming every bad setting, never with a secret value in them.
    """
    base: dict[str, Any] = {}
    path = config_file if config_file is not None else _config_path_from_env()
    if path is not None:
        base = _toml_source(path.expanduser())
        base["config"] = path
    base.update(overrides)
    source = f"{path} and env" if path else "env"
    try:
        return _SettingsFromFile(**base)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source)) from None
    except SettingsError as exc:
        if not isinstance(exc.__cause__, _NotJson):
            raise
        raise ConfigError(f"invalid configuration ({source}): {exc.__cause__}") from None


class _NotJson(ValueError):
    """An env variable for a list or table setting whose value is not JSON."""

    def __init__(self, key: str) -> None:
        suffix = key.upper()
        names = sorted(
            name
            for name in os.environ
            if name.upper().startswith("PVEMCP_")
            and (name.upper() == f"PVEMCP_{suffix}" or name.upper().endswith(f"__{suffix}"))
        )
        super().__init__(
            f"{' or '.join(names) or suffix} is not valid JSON: a list or table set by env "
            """is written in JSON, e.g. '["a", "b"]' or '{"name": "value"}'"""
        )


class _EnvSource(EnvSettingsSource):
    """The env source, naming the variable whose JSON does not parse (pydantic-settings
    names only the top-level setting, in a traceback)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            raise _NotJson(field_name) from None


class _SettingsFromFile(Settings):
    """Settings where init values come from the TOML file and env variables override them."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_EnvSource(settings_cls), init_settings)


class _ConfigPath(BaseSettings):
    """`PVEMCP_CONFIG` alone, read by the same env rules as `Settings`.

    The other env variables are not validated here: `PVEMCP_CLUSTERS__<NAME>__*` may only
    complete a cluster the file describes, so they are judged once merged with the file.
    """

    model_config = SettingsConfigDict(env_prefix="PVEMCP_", extra="ignore")

    config: Path | None = None


def _config_path_from_env() -> Path | None:
    try:
        return _ConfigPath().config
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source="env")) from None


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    """The bad settings, each with its path: one line for one problem, else one line per
    problem under a heading. Input values are never echoed."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    if len(problems) == 1:
        return f"invalid configuration ({source}): {problems[0]}"
    return "\n  ".join([f"invalid configuration ({source}):", *problems])


# Setting names, not values: `tls = 'fingerprint' needs fingerprint` keeps its quoted value.
_ENV_SHORTCUTS = re.compile(
    r"(?<!')\b(api_url|token_id|token_secret|tls|ca_file|fingerprint)\b(?!')"
)


def _env_cluster_problems(exc: ValidationError) -> str:
    """The `default` cluster's problems in the names its settings are set by
    (`PVEMCP_TOKEN_ID`, ...), including in messages such as "token_id and token_secret go
    together"."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = "__".join(str(part) for part in err["loc"]).upper()
        message = _ENV_SHORTCUTS.sub(
            lambda found: f"PVEMCP_{found[0].upper()}", err["msg"].removeprefix("Value error, ")
        )
        problems.append(f"PVEMCP_{where}: {message}" if where else message)
    return "; ".join(problems)
