"""Storage tools (issue 12): storages and their usage, content, one volume, its removal,
downloads from a URL, and the appliance template index.

A volume is removed only when no guest uses it: PVE's own DELETE frees whatever it is
given (only a protected volume and a linked clone's base are refused), so the planner
reads the configs that could name it (its owner's with snapshots, or every guest that
sees the storage for an ISO or snippet) and refuses naming the guest and the key.

A download is checked before anything is sent (SSRF): http or https only, no credentials
in the URL, the host in the cluster's `download_hosts` when that is set, and every address
the host resolves to public unless `download_internal_hosts` lists the host; the plan
carries the host, so policy's `hosts` rules apply too. The node fetches the URL itself
(wget) and follows redirects, which PVE gives no way to refuse: the gateway cannot see
them, and the plan says so.

Snippets (cloud-init user data) are listed and removed here; PVE's API has no way to
write a snippet's text (`upload` takes iso, vztmpl and import only) and none to read it,
so reading and writing them is `tools/snippets.py`'s, over SSH.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote, unquote, urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, model_validator

from pvemcp.proxmox.errors import NotFound
from pvemcp.tools.kit import (
    OBJECT,
    Answer,
    ApiCall,
    Change,
    NodeName,
    Plan,
    ProxmoxError,
    StorageId,
    Target,
    TaskOutcome,
    Tier,
    ToolContext,
    ToolFailure,
    ToolInput,
    ToolOutput,
    Vmid,
    WaitInput,
    WriteInput,
    action,
    gib,
    matching,
    node_or_default,
    planners,
    read_as,
    tool,
    undo,
)

ContentType = Literal["images", "rootdir", "iso", "vztmpl", "backup", "snippets", "import"]
Volid = Annotated[
    str,
    matching(r"[a-zA-Z][\w.-]*[a-zA-Z0-9]:\S+", "a volume id (storage:name)"),
    Field(max_length=255, description="Volume id (storage:name), from proxmox_storage_content."),
]
ISO = "local:iso/ubuntu-24.04.1-live-server-amd64.iso"
VM_BACKUP = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"
ALPINE = "alpine-3.22-default_20250617_amd64.tar.xz"
"""Seeded in the simulator; the examples and rejects name them."""


class _Volume(Answer):
    """One item of GET .../storage/{storage}/content."""

    volid: str
    content: str
    format: str | None = None
    size: int | None = None
    vmid: int | None = None
    ctime: int | None = None
    notes: str | None = None
    protected: bool | None = None


class _Config(Answer):
    """A storage's section of storage.cfg (GET /storage)."""

    storage: str
    type: str
    content: str = ""
    shared: bool | None = None
    path: str | None = None
    disable: bool | None = None


class _Usage(Answer):
    """A storage item of GET /cluster/resources."""

    storage: str
    node: str
    status: str | None = None
    disk: int | None = None
    maxdisk: int | None = None


_VOLUMES = TypeAdapter(list[_Volume])
_CONFIGS = TypeAdapter(list[_Config])
_CONFIG = TypeAdapter(_Config)
_USAGE = TypeAdapter(list[_Usage])
_ROWS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])


def _content_path(node: str, storage: str) -> str:
    return f"/nodes/{node}/storage/{quote(storage, safe='')}/content"


async def storage_config(ctx: ToolContext, storage: str, field: str) -> _Config:
    """The storage's config, or `not_found` naming `field` when PVE says it does not exist
    (any other failure, a 5xx or a timeout, is reported as itself)."""
    try:
        return await read_as(ctx, _CONFIG, f"/storage/{quote(storage, safe='')}")
    except NotFound:
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no storage {storage!r}",
            field=field,
            hint="List storages with proxmox_storage_list.",
        ) from None


async def _volumes(
    ctx: ToolContext, node: str, storage: str, *, field: str, **filters: Any
) -> list[_Volume]:
    """The content of `storage` as `node` sees it (`filters`: content, vmid)."""
    await planners.storage_status(ctx, node, storage, field=field, content=filters.get("content"))
    params = {k: v for k, v in filters.items() if v is not None}
    return await read_as(ctx, _VOLUMES, _content_path(node, storage), params)


# --- list ------------------------------------------------------------------------------


class ListArgs(ToolInput):
    node: Annotated[NodeName | None, Field(description="Only this node's view.")] = None
    content: Annotated[ContentType | None, Field(description="Only storages holding it.")] = None


class NodeUsage(ToolOutput):
    node: str
    status: str | None = None
    total_gib: float | None = None
    used_gib: float | None = None
    used_pct: float | None = None


class StorageRow(ToolOutput):
    storage: str
    type: str
    content: list[str]
    shared: bool = False
    disabled: bool | None = None
    nodes: list[NodeUsage]


class StorageList(ToolOutput):
    storages: list[StorageRow]


@tool(
    "proxmox_storage_list",
    title="List storages",
    tier=Tier.READ,
    toolset="storage",
    input=ListArgs,
    output=StorageList,
    api=["GET /storage", "GET /cluster/resources"],
    idempotent=True,
    examples=[{}, {"content": "iso"}, {"node": "pve2", "content": "backup"}],
    rejects=[({"content": "disks"}, "invalid_argument")],
)
async def storage_list(ctx: ToolContext, args: ListArgs) -> StorageList:
    """Storages of the cluster: type, content types, shared, and per node status and
    usage (GiB, %). Filter by node or by a content type (iso, backup, images...)."""
    configs = await read_as(ctx, _CONFIGS, "/storage")
    usage = await read_as(ctx, _USAGE, "/cluster/resources", {"type": "storage"})
    rows = []
    for config in sorted(configs, key=lambda c: c.storage):
        content = sorted(c for c in config.content.split(",") if c)
        if args.content is not None and args.content not in content:
            continue
        nodes = [
            NodeUsage(
                node=u.node,
                status=u.status,
                total_gib=gib(u.maxdisk),
                used_gib=gib(u.disk),
                used_pct=round(100 * u.disk / u.maxdisk, 1) if u.maxdisk and u.disk else None,
            )
            for u in sorted(usage, key=lambda u: u.node)
            if u.storage == config.storage and args.node in (None, u.node)
        ]
        if args.node is not None and not nodes:
            continue
        rows.append(
            StorageRow(
                storage=config.storage,
                type=config.type,
                content=content,
                shared=bool(config.shared),
                disabled=config.disable or None,
                nodes=nodes,
            )
        )
    return StorageList(storages=rows)


# --- content ---------------------------------------------------------------------------


class ContentArgs(ToolInput):
    storage: StorageId
    node: NodeName | None = None
    content: ContentType | None = None
    vmid: Vmid | None = None
    offset: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class VolumeRow(ToolOutput):
    volid: str
    content: str
    format: str | None = None
    size: int | None = None
    vmid: int | None = None
    notes: str | None = None
    protected: bool | None = None


class ContentList(ToolOutput):
    volumes: list[VolumeRow]
    total: int
    next_offset: int | None = None


@tool(
    "proxmox_storage_content",
    title="List a storage's content",
    tier=Tier.READ,
    toolset="storage",
    input=ContentArgs,
    output=ContentList,
    api=["GET /nodes/{node}/storage/{storage}/content"],
    idempotent=True,
    examples=[
        {"storage": "local", "content": "iso"},
        {"storage": "local-lvm", "vmid": 100, "node": "pve1"},
        {"storage": "local", "content": "snippets", "limit": 10},
    ],
    rejects=[
        ({"storage": "nope"}, "not_found"),
        ({"storage": "local-lvm", "content": "iso"}, "invalid_argument"),
    ],
)
async def storage_content(ctx: ToolContext, args: ContentArgs) -> ContentList:
    """Volumes on a storage as a node sees it: disks, ISOs, container templates,
    backups, snippets; filtered by content type or vmid, paged. Size in bytes."""
    node = node_or_default(ctx, args.node)
    items = await _volumes(
        ctx, node, args.storage, field="storage", content=args.content, vmid=args.vmid
    )
    items.sort(key=lambda i: i.volid)
    page = items[args.offset : args.offset + args.limit]
    end = args.offset + len(page)
    rows = [
        VolumeRow(
            volid=i.volid,
            content=i.content,
            format=i.format,
            size=i.size,
            vmid=i.vmid or None,
            notes=i.notes,
            protected=i.protected or None,
        )
        for i in page
    ]
    return ContentList(
        volumes=rows, total=len(items), next_offset=end if end < len(items) else None
    )


# --- one volume ------------------------------------------------------------------------


class VolumeArgs(ToolInput):
    volid: Volid
    node: NodeName | None = None


class VolumeInfo(VolumeRow):
    path: str | None = None
    used: int | None = None
    used_by: list[str] = Field(default_factory=list)
    """The guests whose config (or a snapshot's) names the volume: `qemu 100 (web01) ide2`."""


async def _find(ctx: ToolContext, node: str, volid: str) -> _Volume:
    """The volume as `node` lists it, or `not_found` naming `volid`."""
    storage = volid.split(":", 1)[0]
    try:
        found = [v for v in await _volumes(ctx, node, storage, field="volid") if v.volid == volid]
    except ToolFailure as failure:
        raise ToolFailure(failure.code, failure.message, field="volid", hint=failure.hint) from None
    if not found:
        raise ToolFailure(
            "not_found",
            f"no volume {volid} on node {node}",
            field="volid",
            hint="List volumes with proxmox_storage_content (a local storage differs per node).",
        )
    return found[0]


def _names(value: object, volid: str) -> bool:
    """Whether a config value names the volume: as a drive (`local:iso/x.iso,media=cdrom`)
    or in an option (`cicustom: user=local:snippets/u.yaml`)."""
    return volid in (part.split("=", 1)[-1] for part in str(value).split(","))


async def _users(ctx: ToolContext, node: str, volume: _Volume, shared: bool) -> list[str]:
    """`type vmid (name) key` of every guest config and snapshot that names the volume: of
    its owner only for a guest's volume (PVE's `is_volume_in_use`), else of every guest
    that sees the storage (an ISO in a CD-ROM drive, a snippet in cicustom)."""
    rows = await planners.guest_resources(ctx)
    if volume.vmid:
        rows = [r for r in rows if int(r["vmid"]) == volume.vmid]
    elif not shared:
        rows = [r for r in rows if r["node"] == node]
    users = []
    for row in rows:
        base = f"/nodes/{row['node']}/{row['type']}/{row['vmid']}"
        label = f"{row['type']} {row['vmid']} ({row.get('name', '?')})"
        configs = [("", await read_as(ctx, OBJECT, f"{base}/config"))]
        if volume.vmid:
            snapshots = await read_as(ctx, _ROWS, f"{base}/snapshot")
            for snap in (s["name"] for s in snapshots if s.get("name") != "current"):
                path = f"{base}/snapshot/{quote(str(snap), safe='')}/config"
                configs.append((f"snapshot {snap} ", await read_as(ctx, OBJECT, path)))
        users += [
            f"{label} {where}{key}"
            for where, config in configs
            for key, value in sorted(config.items())
            if _names(value, volume.volid)
        ]
    return users


@tool(
    "proxmox_storage_volume_get",
    title="Show a volume",
    tier=Tier.READ,
    toolset="storage",
    input=VolumeArgs,
    output=VolumeInfo,
    api=["GET /nodes/{node}/storage/{storage}/content/{volume}"],
    idempotent=True,
    examples=[{"volid": ISO}, {"volid": "local-lvm:vm-100-disk-0"}, {"volid": VM_BACKUP}],
    rejects=[
        ({"volid": "local:iso/nope.iso"}, "not_found"),
        ({"volid": "nope"}, "invalid_argument"),
    ],
)
async def volume_get(ctx: ToolContext, args: VolumeArgs) -> VolumeInfo:
    """One volume: content type, format, size, path on the node, notes, protection, and
    which guests use it (config key or snapshot), so you know before removing it."""
    node = node_or_default(ctx, args.node)
    volume = await _find(ctx, node, args.volid)
    config = await storage_config(ctx, args.volid.split(":", 1)[0], "volid")
    path = f"{_content_path(node, config.storage)}/{quote(args.volid, safe='')}"
    info = await read_as(ctx, OBJECT, path)
    return VolumeInfo(
        volid=volume.volid,
        content=volume.content,
        format=volume.format,
        size=volume.size,
        vmid=volume.vmid or None,
        notes=info.get("notes") or None,
        protected=bool(info.get("protected")) or None,
        path=info.get("path"),
        used=info.get("used"),
        used_by=await _users(ctx, node, volume, bool(config.shared)),
    )


# --- delete ----------------------------------------------------------------------------


class DeleteArgs(WriteInput, VolumeArgs):
    pass


async def _plan_delete(ctx: ToolContext, args: DeleteArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    volume = await _find(ctx, node, args.volid)
    if volume.protected:
        raise ToolFailure(
            "protected",
            f"{args.volid} is protected",
            field="volid",
            hint="Protection keeps a backup from removal and pruning; only if it really may "
            "go, unprotect it first (proxmox_storage_volume_update protected=false).",
        )
    config = await storage_config(ctx, args.volid.split(":", 1)[0], "volid")
    users = await _users(ctx, node, volume, bool(config.shared))
    if users:
        raise ToolFailure(
            "in_use",
            f"{args.volid} is used by {'; '.join(users)}",
            field="volid",
            hint="Detach it from the guest first (proxmox_guest_config_update: delete the "
            "key, or set a CD-ROM to none), or delete the guest's snapshot that holds it.",
            details={"used_by": users},
        )
    lost = f"{volume.content}, {volume.size} bytes" + (
        f", notes {volume.notes!r}" if volume.notes else ""
    )
    storage = config.storage
    call = ApiCall.to(
        "DELETE",
        "/nodes/{node}/storage/{storage}/content/{volume}",
        task=True,
        node=node,
        storage=storage,
        volume=args.volid,
    )
    shared = "" if config.shared else f" on {node} (a local storage: other nodes' copies stay)"
    return Plan(
        summary=f"remove {args.volid}{shared}",
        changes=[
            Change(field=args.volid, before=lost, after=None),
            Change(field=f"{storage} free GiB", after=f"+{gib(volume.size)}"),
        ],
        target=Target(node=node, vmid=volume.vmid or None),
        calls=[call],
        warnings=[undo.irreversible("the volume and its data are deleted")],
    )


volume_delete = action(
    "proxmox_storage_volume_delete",
    title="Delete a volume",
    description="""Delete a volume (ISO, template, backup, snippet, unused disk) from a
    storage. Refused while a guest's config or snapshot uses it (named) or it is
    protected. Irreversible. A guest's disk: detach it with the guest tools.""",
    tier=Tier.DESTRUCTIVE,
    toolset="storage",
    input=DeleteArgs,
    output=TaskOutcome,
    planner=_plan_delete,
    api=["DELETE /nodes/{node}/storage/{storage}/content/{volume}"],
    examples=[{"volid": ISO}, {"volid": "local:snippets/web-user-data.yaml", "node": "pve2"}],
    rejects=[
        ({"volid": "local-lvm:vm-100-disk-0"}, "in_use"),
        ({"volid": VM_BACKUP}, "protected"),
        ({"volid": "local:iso/nope.iso"}, "not_found"),
        ({"volid": "nope:iso/x.iso"}, "not_found"),
    ],
)


# --- notes and protection ----------------------------------------------------------------


class UpdateArgs(WriteInput, VolumeArgs):
    notes: Annotated[str | None, Field(max_length=1024, description="New notes.")] = None
    protected: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.notes is None and self.protected is None:
            raise ValueError("give notes or protected")
        return self


async def _plan_update(ctx: ToolContext, args: UpdateArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    volume = await _find(ctx, node, args.volid)
    if volume.content != "backup":
        raise ToolFailure(
            "invalid_argument",
            f"{args.volid} is {volume.content}: only backups have notes and protection",
            field="volid",
            hint="Name a backup (proxmox_storage_content content=backup).",
        )
    params: dict[str, Any] = {}
    changes = []
    if args.notes is not None:
        params["notes"] = args.notes
        changes.append(Change(field="notes", before=volume.notes or "", after=args.notes))
    if args.protected is not None:
        params["protected"] = int(args.protected)
        changes.append(Change(field="protected", before=bool(volume.protected),
                              after=args.protected))  # fmt: skip
    storage = args.volid.split(":", 1)[0]
    call = ApiCall.to("PUT", "/nodes/{node}/storage/{storage}/content/{volume}", params=params,
                      node=node, storage=storage, volume=args.volid)  # fmt: skip
    return Plan(
        summary=f"set {', '.join(params)} of {args.volid}",
        changes=changes,
        target=Target(node=node, vmid=volume.vmid or None),
        calls=[call],
    )


volume_update = action(
    "proxmox_storage_volume_update",
    title="Set a backup's notes or protection",
    description="""Set a backup volume's notes or its protection (a protected backup is
    never pruned or deleted).""",
    tier=Tier.WRITE,
    toolset="storage",
    input=UpdateArgs,
    output=TaskOutcome,
    planner=_plan_update,
    api=["PUT /nodes/{node}/storage/{storage}/content/{volume}"],
    examples=[{"volid": VM_BACKUP, "notes": "before the upgrade", "protected": False}],
    rejects=[
        ({"volid": ISO, "notes": "x"}, "invalid_argument"),
        ({"volid": VM_BACKUP}, "invalid_argument"),
        ({"volid": "nfs-backup:backup/nope.vma.zst", "protected": True}, "not_found"),
    ],
)


# --- download from a URL -----------------------------------------------------------------

_EXTENSIONS = {
    "iso": re.compile(r".+\.(?:iso|img)", re.IGNORECASE),
    "vztmpl": re.compile(r".+\.(?:tar|tar\.(?:gz|xz|zst|bz2))", re.IGNORECASE),
    "import": re.compile(r"[a-zA-Z0-9\-.+=_]+\.(?:ova|qcow2|raw|vmdk)"),
}
"""What PVE's download-url accepts as a file name per content (pve-storage Storage.pm)."""
_ALGORITHM = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}
"""PVE's checksum algorithms by the length of their hex digest, which tells them apart."""


def _algorithm(checksum: str) -> str:
    """The checksum's algorithm, from its length (the argument's validator has checked it)."""
    return _ALGORITHM[len(checksum)]


def _hex_digest(value: str | None) -> str | None:
    """`null` means unset; anything else must be a digest PVE knows by its length."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]+", value) or len(value) not in _ALGORITHM:
        raise ValueError("is not an md5, sha1, sha224, sha256, sha384 or sha512 hex digest")
    return value


class DownloadArgs(WaitInput):
    url: Annotated[str, Field(max_length=2048, description="http(s) URL of the file.")]
    storage: StorageId
    content: Literal["iso", "vztmpl", "import"] = "iso"
    filename: Annotated[
        str | None, Field(max_length=255, description="Default: the URL's last part.")
    ] = None
    checksum: Annotated[
        str | None,
        # The length before the check: pydantic applies a constraint that follows a
        # validator to None as well, and raises TypeError there.
        Field(max_length=128, description="Hex md5/sha1/sha2 digest (known by length)."),
        AfterValidator(_hex_digest),
    ] = None
    node: NodeName | None = None


def _url_refused(message: str, hint: str) -> ToolFailure:
    return ToolFailure("url_not_allowed", message, field="url", hint=hint)


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not public (None: it is), checked on the IPv4 of a mapped IPv6."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


async def _addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to here (an IP literal is itself)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _host_fits(pattern: str, host: str) -> bool:
    """`example.org` is that host, `*.example.org` any subdomain (not the apex), as
    policy's `hosts` patterns are matched."""
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


async def check_url(ctx: ToolContext, url: str) -> str:
    """The URL's host once the URL may be sent to a node, else `url_not_allowed` (or
    `invalid_argument` for a URL that does not parse) naming `url`: the SSRF guard."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _url_refused(
            f"scheme {parts.scheme or '(none)'!r} is not allowed",
            "Give an http:// or https:// URL.",
        )
    if parts.username is not None or parts.password is not None:
        raise _url_refused(
            "the URL carries credentials",
            "Use a URL without user:password@ (it would be recorded).",
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    host = (parts.hostname or "").rstrip(".")
    if not host or port == 0:
        raise ToolFailure(
            "invalid_argument",
            "the URL has no valid host or port",
            field="url",
            hint="Give a full URL such as https://example.org/file.iso.",
        )
    listed = [h.lower().rstrip(".") for h in ctx.cluster.download_hosts]
    if listed and not any(_host_fits(pattern, host) for pattern in listed):
        raise _url_refused(
            f"host {host!r} is not in the cluster's download_hosts",
            f"Download from one of: {', '.join(listed)} (an operator changes the list).",
        )
    addresses = await _addresses(host, port)
    if not addresses:
        raise ToolFailure(
            "invalid_argument",
            f"host {host!r} does not resolve",
            field="url",
            hint="Check the host name.",
        )
    internal = {h.lower().rstrip(".") for h in ctx.cluster.download_internal_hosts}
    if host not in internal:
        for address in addresses:
            kind = _address_kind(ipaddress.ip_address(address))
            if kind is not None:
                raise _url_refused(
                    f"host {host!r} is {address}, a {kind} address",
                    "Downloads go to public addresses only; an operator may list a LAN "
                    "mirror in the cluster's download_internal_hosts.",
                )
    return host


def _filename(args: DownloadArgs) -> str:
    """The name PVE will store (`normalize_content_filename`), or `invalid_argument`."""
    given = args.filename or unquote(urlsplit(args.url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^a-zA-Z0-9_.-]", "_", re.sub(r"^.*[/\\]", "", given))
    if not _EXTENSIONS[args.content].fullmatch(name):
        wanted = {
            "iso": ".iso or .img",
            "vztmpl": ".tar[.gz|.xz|.zst|.bz2]",
            "import": ".ova, .qcow2, .raw or .vmdk",
        }[args.content]
        raise ToolFailure(
            "invalid_argument",
            f"file name {name!r} does not end in {wanted} (content {args.content})",
            field="filename" if args.filename else "url",
            hint=f"Pass filename ending in {wanted}.",
        )
    return name


async def _file_storage(ctx: ToolContext, node: str, storage: str, content: str) -> Any:
    """The storage's status on `node`, refused when it does not hold `content` files."""
    config = await storage_config(ctx, storage, "storage")
    status = await planners.storage_status(ctx, node, storage, field="storage", content=content)
    if config.path is None:
        raise ToolFailure(
            "invalid_argument",
            f"storage {storage!r} ({config.type}) holds no files",
            field="storage",
            hint="Choose a directory-like storage (dir, nfs, cifs, cephfs).",
        )
    return status


async def _absent(ctx: ToolContext, node: str, volid: str, field: str) -> None:
    storage = volid.split(":", 1)[0]
    params = {"content": volid.split(":", 1)[1].split("/", 1)[0]}
    existing = await read_as(ctx, _VOLUMES, _content_path(node, storage), params)
    if any(v.volid == volid for v in existing):
        raise ToolFailure(
            "already_exists",
            f"{volid} already exists on {node}",
            field=field,
            hint="Use it as it is, choose another file name, or delete it first.",
        )


REDIRECTS = (
    "the node fetches the URL and follows HTTP redirects, which PVE cannot refuse: only "
    "this URL's host was checked, and the node resolves it again"
)


async def _plan_download(ctx: ToolContext, args: DownloadArgs) -> Plan:
    host = await check_url(ctx, args.url)
    node = node_or_default(ctx, args.node)
    filename = _filename(args)
    status = await _file_storage(ctx, node, args.storage, args.content)
    volid = f"{args.storage}:{args.content}/{filename}"
    await _absent(ctx, node, volid, "filename")
    params: dict[str, Any] = {"url": args.url, "content": args.content, "filename": filename}
    if args.checksum:
        params |= {"checksum": args.checksum, "checksum-algorithm": _algorithm(args.checksum)}
    call = ApiCall.to(
        "POST",
        "/nodes/{node}/storage/{storage}/download-url",
        params=params,
        task=True,
        node=node,
        storage=args.storage,
    )
    warnings = [REDIRECTS]
    if not args.checksum:
        warnings.append("no checksum: the file is not verified")
    return Plan(
        summary=f"download {args.url} to {volid} on {node}",
        changes=[
            Change(field=volid, after="downloaded"),
            Change(field=f"{args.storage} free GiB", before=gib(status.avail)),
        ],
        target=Target(node=node),
        calls=[call],
        hosts=[host],
        warnings=warnings,
    )


class Downloaded(TaskOutcome):
    volid: str | None = None
    size: int | None = None


@tool(
    "proxmox_storage_download",
    title="Download a file to a storage",
    tier=Tier.WRITE,
    toolset="storage",
    input=DownloadArgs,
    output=Downloaded,
    planner=_plan_download,
    api=["POST /nodes/{node}/storage/{storage}/download-url"],
    examples=[
        {
            "url": "https://93.184.215.14/debian-13.iso",
            "storage": "local",
            "checksum": "ab" * 32,
            "dry_run": True,
        }
    ],
    rejects=[
        ({"url": "http://127.0.0.1/x.iso", "storage": "local"}, "url_not_allowed"),
        ({"url": "http://169.254.169.254/latest.iso", "storage": "local"}, "url_not_allowed"),
        ({"url": "https://10.1.2.3/x.iso", "storage": "local"}, "url_not_allowed"),
        ({"url": "http://[::ffff:192.168.1.1]/x.iso", "storage": "local"}, "url_not_allowed"),
        ({"url": "file:///etc/shadow", "storage": "local"}, "url_not_allowed"),
        ({"url": "https://u:p@93.184.215.14/x.iso", "storage": "local"}, "url_not_allowed"),
        ({"url": "https://93.184.215.14/x.iso", "storage": "local-lvm"}, "invalid_argument"),
        ({"url": "https://93.184.215.14/x.iso", "storage": "nope"}, "not_found"),
        ({"url": "https://93.184.215.14/x.exe", "storage": "local"}, "invalid_argument"),
        (
            {"url": "https://93.184.215.14/debian-12.9.0-amd64-netinst.iso", "storage": "local"},
            "already_exists",
        ),
    ],
)
async def storage_download(ctx: ToolContext, args: DownloadArgs) -> Downloaded:
    """Download an ISO, container template or import image from an http(s) URL into a
    storage (the node fetches it); public hosts only. Give a checksum to verify it."""
    plan = ctx.plan
    assert plan is not None
    call = plan.calls[0]
    upid = str((await ctx.call(call.method, call.path, call.params)).data)
    node = str(plan.target.node)
    outcome = Downloaded(node=node, upid=upid, task_status="running")
    if not args.wait:
        return outcome
    task = await ctx.wait_task(upid, args.timeout)
    outcome.task_status, outcome.exitstatus = task.status, task.exitstatus
    volid = f"{args.storage}:{args.content}/{call.params['filename']}"
    items = await read_as(
        ctx, _VOLUMES, _content_path(node, args.storage), {"content": args.content}
    )
    found = next((i for i in items if i.volid == volid), None)
    if found is not None and task.exitstatus == "OK":
        outcome.volid, outcome.size = volid, found.size
    return outcome


# --- appliance templates -------------------------------------------------------------------


class _Appliance(Answer):
    template: str
    package: str | None = None
    section: str | None = None
    os: str | None = None
    version: str | None = None
    headline: str | None = None
    type: str | None = None


_APPLIANCES = TypeAdapter(list[_Appliance])


class ApplianceArgs(ToolInput):
    node: NodeName | None = None
    section: Annotated[str | None, Field(max_length=32, description="system, turnkeylinux...")] = (
        None
    )
    search: Annotated[str | None, Field(max_length=64, description="Part of name or headline.")] = (
        None
    )


class ApplianceRow(ToolOutput):
    template: str
    section: str | None = None
    os: str | None = None
    version: str | None = None
    headline: str | None = None


class ApplianceList(ToolOutput):
    appliances: list[ApplianceRow]


@tool(
    "proxmox_appliance_list",
    title="List appliance templates",
    tier=Tier.READ,
    toolset="storage",
    input=ApplianceArgs,
    output=ApplianceList,
    api=["GET /nodes/{node}/aplinfo"],
    idempotent=True,
    examples=[{}, {"section": "system", "search": "debian"}],
    rejects=[({"node": "pve9"}, "not_found")],
)
async def appliance_list(ctx: ToolContext, args: ApplianceArgs) -> ApplianceList:
    """The container templates PVE's appliance index offers (aplinfo), to fetch with
    proxmox_appliance_fetch; filter by section or a search text."""
    node = node_or_default(ctx, args.node)
    index = await _index(ctx, node)
    wanted = (args.search or "").lower()
    rows = [
        ApplianceRow(
            template=a.template, section=a.section, os=a.os, version=a.version, headline=a.headline
        )
        for a in sorted(index, key=lambda a: (a.section or "", a.template))
        if args.section in (None, a.section)
        and wanted in f"{a.template} {a.headline or ''}".lower()
    ]
    return ApplianceList(appliances=rows)


_NODE_ROWS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])


async def _index(ctx: ToolContext, node: str) -> list[_Appliance]:
    """The node's appliance index; `not_found` when the cluster has no such node (PVE
    answers it with a 500 "hostname lookup failed"), any other failure as itself."""
    try:
        return await read_as(ctx, _APPLIANCES, f"/nodes/{node}/aplinfo")
    except ProxmoxError:
        if node in {row.get("node") for row in await read_as(ctx, _NODE_ROWS, "/nodes")}:
            raise
        raise ToolFailure(
            "not_found",
            f"cluster {ctx.cluster_name} has no node {node!r}",
            field="node",
            hint="List nodes with proxmox_node_list.",
        ) from None


class FetchArgs(WaitInput):
    template: Annotated[str, Field(max_length=255, description="From proxmox_appliance_list.")]
    storage: StorageId
    node: NodeName | None = None


async def _plan_fetch(ctx: ToolContext, args: FetchArgs) -> Plan:
    node = node_or_default(ctx, args.node)
    index = await _index(ctx, node)
    if not any(a.template == args.template for a in index):
        family = args.template.split("-")[0]
        close = [a.template for a in index if a.template.startswith(family)]
        raise ToolFailure(
            "not_found",
            f"the appliance index has no template {args.template!r}",
            field="template",
            hint="Take a template name from proxmox_appliance_list"
            + (f" (maybe {close[0]})." if close else "."),
        )
    status = await planners.storage_status(
        ctx, node, args.storage, field="storage", content="vztmpl"
    )
    volid = f"{args.storage}:vztmpl/{args.template}"
    await _absent(ctx, node, volid, "template")
    call = ApiCall.to(
        "POST",
        "/nodes/{node}/aplinfo",
        params={"storage": args.storage, "template": args.template},
        task=True,
        node=node,
    )
    return Plan(
        summary=f"fetch appliance {args.template} to {volid} on {node}",
        changes=[
            Change(field=volid, after="downloaded, checksum verified"),
            Change(field=f"{args.storage} free GiB", before=gib(status.avail)),
        ],
        target=Target(node=node),
        calls=[call],
    )


appliance_fetch = action(
    "proxmox_appliance_fetch",
    title="Fetch an appliance template",
    description="""Download a container template from PVE's appliance index into a
    storage with vztmpl content (checksum verified by PVE); then create containers from
    it.""",
    tier=Tier.WRITE,
    toolset="storage",
    input=FetchArgs,
    output=TaskOutcome,
    planner=_plan_fetch,
    api=["POST /nodes/{node}/aplinfo"],
    examples=[{"template": ALPINE, "storage": "local"}],
    rejects=[
        ({"template": "alpine-9.tar.xz", "storage": "local"}, "not_found"),
        ({"template": ALPINE, "storage": "local-lvm"}, "invalid_argument"),
        (
            {"template": "debian-12-standard_12.7-1_amd64.tar.zst", "storage": "local"},
            "already_exists",
        ),
    ],
)


TOOLS = (
    storage_list,
    storage_content,
    volume_get,
    volume_delete,
    volume_update,
    storage_download,
    appliance_list,
    appliance_fetch,
)
