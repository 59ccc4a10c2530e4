"""Storages as an operator sees them: the cluster's storage config, one volume's attributes
and removal, downloads from a URL, and the appliance template index (`aplinfo`).

The guests' volumes and their space live in `volumes.py`, backups in `backups.py`; this
module adds the methods of pve-storage's `API2/Storage/Config.pm` (read), `Content.pm`
(PUT and DELETE of a volume), `Status.pm` (`download-url`) and pve-manager's
`API2/Nodes.pm` (`aplinfo`), in their order of checks and their wording.

Where the simulator is simpler than PVE (said here once):
- `download-url` really fetches the URL, but only from a loopback address (the simulator
  never leaves the machine: any other host, also as a redirect target, fails as wget
  fails on a network error). The file's bytes are not kept, only their size and digests.
  `compression` is refused as not simulated; an ISO's content is not inspected
  (`assert_iso_content`).
- The appliance index is seeded, and fetching a template from it makes the volume with
  the size the index gives, without any network: its checksum is right by construction.
- PVE's DELETE of a volume does not ask whether a guest's config uses it (only whether a
  linked clone's base or a protected volume is removed): neither does the simulator. The
  gateway's tool refuses a volume a guest uses, as the web UI's ImageView does.
- Snippets: PVE's API has no way to write or delete a snippet's text except DELETE of
  the volume (`upload` takes iso, vztmpl and import only); the seed holds one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .backups import Backup, volume_path
from .errors import ApiError, failure, param_error
from .model import GiB, MiB, Storage
from .router import Context, Params, Result, Route, api, text
from .tasks import Plan, fail
from .volumes import BLOCK_TYPES, Volume

ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
MAX_DOWNLOAD = 256 * MiB
"""The most the simulator reads of a download (tests serve a few KiB)."""
DOWNLOAD_TIMEOUT = 10.0
SECONDS_PER_GIB = 8.0
"""How long a download or template fetch takes per GiB, before the time scale."""

ISO_EXT_RE = re.compile(r"[^/]+\.(?:iso|img)$", re.IGNORECASE)
VZTMPL_EXT_RE = re.compile(r"[^/]+\.(?:tar|tar\.(gz|xz|zst|bz2))$", re.IGNORECASE)
IMPORT_EXT_RE = re.compile(r"[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)$")
"""pve-storage `Storage.pm` `$ISO_EXT_RE_0`, `$VZTMPL_EXT_RE_1`, `$UPLOAD_IMPORT_EXT_RE_1`."""

_CONFIG: dict[str, dict[str, Any]] = {
    "dir": {"path": "/var/lib/vz"},
    "lvmthin": {"vgname": "pve", "thinpool": "data"},
    "nfs": {"server": "10.10.10.50", "export": "/export/pve", "options": "vers=4.2"},
    "zfspool": {"pool": "rpool/data", "sparse": 1},
}
"""The storage.cfg keys of the seeded storage types besides type and content."""


@dataclass
class Fetched(Volume):
    """A file a download made: its digests, so a second download with a checksum finds
    "the correct file already" as PVE's `download_file_from_url` does."""

    digests: dict[str, str] = field(default_factory=dict)


def storage_config(storage: Storage) -> dict[str, Any]:
    """A storage's section of storage.cfg as GET /storage lists it."""
    entry: dict[str, Any] = {
        "storage": storage.name,
        "type": storage.type,
        "content": ",".join(sorted(storage.content)),
        **_CONFIG.get(storage.type, {}),
        **storage.extra,
    }
    if storage.type == "nfs":
        entry["path"] = f"/mnt/pve/{storage.name}"
    if storage.shared:
        entry["shared"] = 1
    return entry


def _config_digest(ctx: Context) -> str:
    """storage.cfg's digest (PVE returns it with every section), from what it holds."""
    text_ = repr(sorted((s.name, s.type, s.content) for s in ctx.state.storages))
    return hashlib.sha1(text_.encode()).hexdigest()  # noqa: S324 - PVE's digest is SHA-1


def _storage_index(ctx: Context, params: Params) -> Result:
    """GET /storage (`Config.pm` `index`), optionally of one type."""
    digest = _config_digest(ctx)
    wanted = params.get("type")
    return Result(
        [
            {**storage_config(s), "digest": digest}
            for s in sorted(ctx.state.storages, key=lambda s: s.name)
            if wanted is None or s.type == wanted
        ]
    )


def _storage_read(ctx: Context, params: Params) -> Result:
    """GET /storage/{storage} (`Config.pm` `read`: `storage_config`)."""
    name = text(params, "storage")
    storage = next((s for s in ctx.state.storages if s.name == name), None)
    if storage is None:
        raise failure(f"storage '{name}' does not exist")
    return Result({**storage_config(storage), "digest": _config_digest(ctx)})


# --- one volume ----------------------------------------------------------------------


def _real_volume(ctx: Context, params: Params) -> tuple[str, Storage, str]:
    """(node, storage, volid) of `Content.pm`'s `$real_volume_id`: the volume given as a
    volid or as a name on `storage`; a volid of another storage is refused."""
    node = ctx.state.node(text(params, "node")).name
    name, volume = text(params, "storage"), text(params, "volume")
    if ":" in volume:
        owner = volume.split(":", 1)[0]
        if owner != name:
            raise param_error({"volume": f"storage ID mismatch ({owner} != {name})"})
        volid = volume
    else:
        volid = f"{name}:{volume}"
    return node, ctx.state.volumes.storage_on(name, node), volid


def _update_attributes(ctx: Context, params: Params) -> Result:
    """PUT .../content/{volume}: notes and protection (`update_volume_attribute`); only a
    backup has either on the simulated storages (DirPlugin.pm: "only backups support
    attribute"; the notes wording for other volumes is not verified on a node)."""
    node, _storage, volid = _real_volume(ctx, params)
    found = ctx.state.volumes.find(node, volid)
    if found is None:
        raise failure(f"can't find file '{volid}'")
    for attribute in ("notes", "protected"):
        if attribute not in params:
            continue
        if not isinstance(found, Backup):
            raise failure(f"only backups support attribute '{attribute}'")
        if attribute == "notes":
            found.notes = str(params["notes"])
        else:
            found.protected = bool(params["protected"])
    return Result(None)


def _delete(ctx: Context, params: Params) -> Result:
    """DELETE .../content/{volume}: an `imgdel` worker running `vdisk_free`, which
    refuses a linked clone's base and a protected volume (Storage.pm, Plugin.pm). `delay`
    is not waited for: the UPID is the answer, as PVE's when the task outlasts it."""
    node, storage, volid = _real_volume(ctx, params)
    volname = volid.split(":", 1)[1]
    found = ctx.state.volumes.find(node, volid)
    owner = found.vmid if found is not None and found.vmid else None
    task_id = f"{owner}@{storage.name}" if owner else storage.name

    def job(_begin: float) -> Plan:
        volume = ctx.state.volumes.find(node, volid)
        if volume is None:
            # Plugin.pm free_image: the file is gone (wording of unlink, not verified)
            path = volume_path(storage, volname)
            return fail(f"unlink '{path}' failed - No such file or directory")
        if ctx.state.volumes.linked_to(volid):
            return fail(f"base volume '{volname}' is still in use by linked clones")
        if isinstance(volume, Backup) and volume.protected:
            return fail(f"cannot remove protected volume '{volname}' on '{storage.name}'")

        def apply(_at: float) -> None:
            ctx.state.volumes.free(node, volid)

        return Plan(0.5, lines=((0.9, f"Removed volume '{volid}'"),), apply=apply)

    task = ctx.state.start_task(node, "imgdel", task_id, ctx.user, job, locks=[("volume", volid)])
    return Result(task.upid)


# --- download-url ----------------------------------------------------------------------


def normalize_filename(filename: str) -> str:
    """pve-storage `normalize_content_filename`: the last path part, unsafe chars as `_`."""
    name = re.sub(r"^.*[/\\]", "", filename.rstrip("\n"))
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name)


def _target_volname(content: str, filename: str) -> tuple[str, str]:
    """(volname, format) of a downloaded file, or `Status.pm`'s parameter error."""
    if content == "iso":
        if not ISO_EXT_RE.search(filename):
            raise param_error({"filename": "wrong file extension"})
        return f"iso/{filename}", "iso"
    if content == "vztmpl":
        found = VZTMPL_EXT_RE.search(filename)
        if not found:
            raise param_error({"filename": "wrong file extension"})
        return f"vztmpl/{filename}", "t" + (found.group(1) or "ar")
    found = IMPORT_EXT_RE.fullmatch(filename)
    if not found:
        raise param_error({"filename": "invalid filename or wrong extension"})
    return f"import/{filename}", found.group(1)


def _file_storage(ctx: Context, node: str, name: str, content: str) -> Storage:
    """`storage_check_enabled`, then Status.pm's file-based and content checks."""
    storage = ctx.state.volumes.storage_on(name, node)
    if storage.type in BLOCK_TYPES:
        raise failure(f"can't upload to storage type '{storage.type}', not a file based storage!")
    if content not in storage.content:
        raise failure(f"storage '{name}' is not configured for content-type '{content}'")
    return storage


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _LoopbackOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects as wget does, but only to loopback (the simulator's rule)."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if not _loopback(urlsplit(newurl).hostname):
            raise urllib.error.URLError(f"redirect to {newurl} left the machine")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, verify: bool) -> bytes:
    """The body of `url` (loopback only), or the `download failed` error wget gives: exit
    code 4 for a network failure, 8 for an error answer of the server."""
    command = f"command 'wget --progress=dot:giga -O <tmp> {url}' failed"
    if not _loopback(urlsplit(url).hostname):
        raise failure(f"download failed: {command}: exit code 4")
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        _LoopbackOnly(), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=DOWNLOAD_TIMEOUT) as answer:
            data: bytes = answer.read(MAX_DOWNLOAD + 1)
    except urllib.error.HTTPError:
        raise failure(f"download failed: {command}: exit code 8") from None
    except (urllib.error.URLError, OSError):
        raise failure(f"download failed: {command}: exit code 4") from None
    if len(data) > MAX_DOWNLOAD:
        raise failure(f"download failed: {command}: exit code 3")
    return data


def _fetch_plan(
    ctx: Context,
    node: str,
    storage: Storage,
    *,
    volname: str,
    fmt: str,
    content: str,
    source: str,
    expected: tuple[str, str] | None,
    body: Callable[[], tuple[int, dict[str, str]]],
) -> Plan:
    """The worker of a download: `download_file_from_url` with its checks in order.
    `body` gives (size, digests) when called: of the downloaded data, or for an appliance
    those the index gives."""
    dest = volume_path(storage, volname)
    volid = f"{storage.name}:{volname}"
    lines: list[tuple[float, str]] = [(0.0, f"downloading {source} to {dest}")]
    existing = ctx.state.volumes.find(node, volid)
    if existing is not None:
        digests = existing.digests if isinstance(existing, Fetched) else {}
        if expected is None or expected[0] not in digests:
            return fail(f"refusing to override existing file '{dest}'")
        got = digests[expected[0]]
        if got.lower() == expected[1].lower():
            lines.append((0.1, "calculating checksum of existing file..."
                               "OK, got correct file already, no need to download"))  # fmt: skip
            return Plan(0.5, lines=tuple(lines))
        return fail(f"checksum mismatch: got '{got}' != expect '{expected[1]}', aborting")
    try:
        size, digests = body()
    except ApiError as err:
        return fail(err.reason)
    if expected is not None:
        got = digests[expected[0]]
        if got.lower() != expected[1].lower():
            return fail(f"checksum mismatch: got '{got}' != expect '{expected[1]}'")
        lines.append((0.95, "calculating checksum...OK, checksum verified"))
    total, used = ctx.state.volumes.usage(storage, node)
    if size > total - used:
        # wget writing to a full file system: exit code 3 (file I/O error)
        return fail(f"download failed: command 'wget' failed: exit code 3 (No space left "
                    f"on device: {total - used} < {size})")  # fmt: skip
    lines.append((0.99, f"download of '{source}' to '{dest}' finished"))

    def apply(at: float) -> None:
        volume = Fetched(storage.name, "", volname, 0, size, fmt, content, int(at), digests=digests)
        ctx.state.volumes.add(node, volume)

    return Plan(max(1.0, size / GiB * SECONDS_PER_GIB), lines=tuple(lines), apply=apply)


def _download_url(ctx: Context, params: Params) -> Result:
    """POST .../storage/{storage}/download-url (`Status.pm` `download_url`)."""
    node = ctx.state.node(text(params, "node")).name
    content, url = text(params, "content"), text(params, "url")
    storage = _file_storage(ctx, node, text(params, "storage"), content)
    filename = normalize_filename(text(params, "filename"))
    volname, fmt = _target_volname(content, filename)
    checksum = params.get("checksum")
    expected = (text(params, "checksum-algorithm"), str(checksum)) if checksum else None
    compression = params.get("compression")
    verify = bool(params.get("verify-certificates", 1))

    def job(_begin: float) -> Plan:
        if compression:
            if content != "iso":
                return fail(f"decompression not supported for {content}")
            return fail("decompressing a download is not simulated")

        def body() -> tuple[int, dict[str, str]]:
            data = fetch(url, verify)
            return len(data), {a: hashlib.new(a, data).hexdigest() for a in ALGORITHMS}

        return _fetch_plan(ctx, node, storage, volname=volname, fmt=fmt, content=content,
                           source=url, expected=expected, body=body)  # fmt: skip

    return Result(_worker(ctx, node, f"{storage.name}:{volname}", filename, job))


def _worker(ctx: Context, node: str, volid: str, name: str, job: Callable[[float], Plan]) -> str:
    """A `download` worker's UPID, its id the file name (Status.pm: `encode_text` of an
    already normalised name changes nothing); it locks the file it writes, so two
    downloads of one file queue (PVE's second would find the first's file)."""
    return ctx.state.start_task(
        node, "download", name, ctx.user, job, locks=[("volume", volid)]
    ).upid


# --- aplinfo -------------------------------------------------------------------------


def _appliance(section: str, template: str, headline: str, size: int) -> dict[str, Any]:
    """One entry of the index as `PVE::APLInfo` parses it from aplinfo.dat; package,
    version and OS as the template's name gives them (`debian-12-standard_12.7-1_amd64`)."""
    package, version = template.split("_")[:2]
    os = "-".join(package.split("-")[:2])
    base = "http://download.proxmox.com/images"
    location = f"{base}/{section}/{template}"
    return {
        "package": package,
        "version": version,
        "type": "lxc",
        "os": os,
        "section": section,
        "template": template,
        "headline": headline,
        "description": headline,
        "location": location,
        "infopage": "https://www.proxmox.com/",
        "maintainer": "Proxmox Support Team <support@proxmox.com>",
        "architecture": "amd64",
        "source": location,
        # simulated digest of the simulated file (the index's real ones differ)
        "sha512sum": hashlib.sha512(template.encode()).hexdigest(),
        "_size": size,
    }


APPLIANCES: tuple[dict[str, Any], ...] = tuple(
    _appliance(section, template, headline, mib * MiB)
    for section, template, headline, mib in (
        ("system", "debian-12-standard_12.7-1_amd64.tar.zst", "Debian 12 (standard)", 123),
        ("system", "debian-13-standard_13.1-2_amd64.tar.zst", "Debian 13 (standard)", 131),
        ("system", "ubuntu-24.04-standard_24.04-2_amd64.tar.zst", "Ubuntu 24.04 (standard)", 141),
        ("system", "alpine-3.22-default_20250617_amd64.tar.xz", "Alpine Linux 3.22", 3),
        ("system", "rockylinux-9-default_20240912_amd64.tar.xz", "Rocky Linux 9", 98),
        ("turnkeylinux", "debian-12-turnkey-wordpress_18.1-1_amd64.tar.gz", "TurnKey WordPress",
         412),
    )
)  # fmt: skip
"""The seeded appliance index (`_size` is the simulator's, not a field of PVE's)."""


def _aplinfo(ctx: Context, params: Params) -> Result:
    """GET /nodes/{node}/aplinfo (`Nodes.pm` `aplinfo`)."""
    ctx.state.node(text(params, "node"))
    return Result([{k: v for k, v in a.items() if k != "_size"} for a in APPLIANCES])


def _apl_download(ctx: Context, params: Params) -> Result:
    """POST /nodes/{node}/aplinfo (`Nodes.pm` `apl_download`), checks in its order."""
    node = ctx.state.node(text(params, "node")).name
    template = text(params, "template")
    appliance = next((a for a in APPLIANCES if a["template"] == template), None)
    if appliance is None:
        raise param_error({"template": "no such template"})
    name = text(params, "storage")
    storage = ctx.state.volumes.storage_on(name, node)
    if "vztmpl" not in storage.content:
        raise failure(f"storage '{name}' does not support templates")
    volname, fmt = _target_volname("vztmpl", template)
    expected = ("sha512", str(appliance["sha512sum"]))

    def job(_begin: float) -> Plan:
        return _fetch_plan(ctx, node, storage, volname=volname, fmt=fmt, content="vztmpl",
                           source=appliance["location"], expected=expected,
                           body=lambda: (appliance["_size"], dict([expected])))  # fmt: skip

    return Result(_worker(ctx, node, f"{storage.name}:{volname}", template, job))


ROUTES: tuple[Route, ...] = (
    api("GET", "/storage", _storage_index),
    api("GET", "/storage/{storage}", _storage_read),
    api("PUT", "/nodes/{node}/storage/{storage}/content/{volume}", _update_attributes),
    api("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}", _delete),
    api("POST", "/nodes/{node}/storage/{storage}/download-url", _download_url),
    api("GET", "/nodes/{node}/aplinfo", _aplinfo),
    api("POST", "/nodes/{node}/aplinfo", _apl_download),
)
