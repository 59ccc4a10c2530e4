"""Storages over HTTPS: the config, a volume's attributes and removal, downloads from a URL
served on loopback by the test, and the appliance index (simulator/storage.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx2
import pytest

from .conftest import get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

ISO = b"\x00" * 32_768 + b"CD001" + b"simulated installer" * 100
"""What the test's server serves as an ISO (the simulator does not look inside)."""
VM_BACKUP = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"


class FileServer:
    """An HTTP server on 127.0.0.1 serving `files` by path; `/moved/<path>` redirects to
    `<path>`, `/away` redirects off the machine."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        served = dict(files)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/moved/") or self.path == "/away":
                    self.send_response(302)
                    where = ("http://10.0.0.1/x.iso" if self.path == "/away"
                             else self.path.removeprefix("/moved"))  # fmt: skip
                    self.send_header("Location", where)
                    self.end_headers()
                    return
                body = served.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer({"/netinst.iso": ISO}) as server:
        yield server


def _content(volid: str) -> str:
    storage = volid.split(":", 1)[0]
    return f"/nodes/pve1/storage/{storage}/content/{quote(volid, safe='')}"


async def _volids(client: httpx2.AsyncClient, storage: str, content: str) -> set[str]:
    items = await get_data(client, f"/nodes/pve1/storage/{storage}/content", content=content)
    return {item["volid"] for item in items}


async def _task(client: httpx2.AsyncClient, upid: str) -> tuple[str, list[str]]:
    """(exitstatus, log lines) of a finished task."""
    status = await task_status(client, upid)
    assert status["status"] == "stopped", status
    log = await get_data(client, f"/nodes/pve1/tasks/{upid}/log", limit=100)
    return status["exitstatus"], [line["t"] for line in log]


async def _download(client: httpx2.AsyncClient, storage: str = "local", **params: Any) -> str:
    return await post_upid(client, f"/nodes/pve1/storage/{storage}/download-url", **params)


async def test_storage_config_lists_every_storage_and_reads_one(
    client: httpx2.AsyncClient,
) -> None:
    listed = await get_data(client, "/storage")
    names = [s["storage"] for s in listed]
    assert names == sorted(names) and {"local", "local-lvm", "nfs-backup"} <= set(names)
    local = listed[0]
    assert (local["type"], local["path"]) == ("dir", "/var/lib/vz")
    assert "snippets" in local["content"].split(",") and len(local["digest"]) == 40
    assert [s["storage"] for s in await get_data(client, "/storage", type="lvmthin")] == [
        "local-lvm"
    ]
    nfs = await get_data(client, "/storage/nfs-backup")
    assert (nfs["shared"], nfs["content"], nfs["path"]) == (1, "backup", "/mnt/pve/nfs-backup")
    response = await client.get("/storage/nope")
    assert (response.status_code, response.reason_phrase) == (
        500,
        "storage 'nope' does not exist",
    )


async def test_snippets_are_content_of_local(client: httpx2.AsyncClient) -> None:
    items = await get_data(client, "/nodes/pve2/storage/local/content", content="snippets")
    assert [(i["volid"], i["format"]) for i in items] == [
        ("local:snippets/web-user-data.yaml", "snippet")
    ]
    info = await get_data(client, _content("local:snippets/web-user-data.yaml"))
    assert info["path"] == "/var/lib/vz/snippets/web-user-data.yaml"  # was under images/


async def test_download_fetches_checks_the_checksum_and_adds_the_iso(
    fresh_client: httpx2.AsyncClient, files: FileServer
) -> None:
    digest = hashlib.sha256(ISO).hexdigest()
    upid = await _download(fresh_client, url=files.url("/moved/netinst.iso"), content="iso",
                           filename="my netinst.iso", checksum=digest.upper(),
                           **{"checksum-algorithm": "sha256"})  # fmt: skip
    assert upid.split(":")[5:7] == ["download", "my_netinst.iso"]
    status, log = await _task(fresh_client, upid)
    assert status == "OK", log
    assert "calculating checksum...OK, checksum verified" in log
    items = await get_data(fresh_client, "/nodes/pve1/storage/local/content", content="iso")
    new = next(i for i in items if i["volid"] == "local:iso/my_netinst.iso")
    assert (new["size"], new["format"]) == (len(ISO), "iso")
    # a second download with the right checksum finds the file; without one it refuses
    again = await _download(fresh_client, url=files.url("/netinst.iso"), content="iso",
                            filename="my_netinst.iso", checksum=digest,
                            **{"checksum-algorithm": "sha256"})  # fmt: skip
    status, log = await _task(fresh_client, again)
    assert status == "OK" and any("no need to download" in line for line in log)
    third = await _download(fresh_client, url=files.url("/netinst.iso"), content="iso",
                            filename="my_netinst.iso")  # fmt: skip
    status, _ = await _task(fresh_client, third)
    assert status == "refusing to override existing file '/var/lib/vz/template/iso/my_netinst.iso'"


@pytest.mark.parametrize(
    ("path", "checksum", "error"),
    [
        ("/netinst.iso", "ab" * 32, f"checksum mismatch: got '{hashlib.sha256(ISO).hexdigest()}' "
                                     f"!= expect '{'ab' * 32}'"),
        ("/missing.iso", None, "download failed: command 'wget --progress=dot:giga -O <tmp> "
                               "{url}' failed: exit code 8"),
        ("/away", None, "download failed: command 'wget --progress=dot:giga -O <tmp> {url}' "
                        "failed: exit code 4"),
    ],
)  # fmt: skip
async def test_a_failed_download_leaves_nothing(
    fresh_client: httpx2.AsyncClient,
    files: FileServer,
    path: str,
    checksum: str | None,
    error: str,
) -> None:
    before = await _volids(fresh_client, "local", "iso")
    extra = {"checksum": checksum, "checksum-algorithm": "sha256"} if checksum else {}
    url = files.url(path)
    upid = await _download(fresh_client, url=url, content="iso", filename="x.iso", **extra)
    status, _ = await _task(fresh_client, upid)
    assert status == error.format(url=url)
    assert await _volids(fresh_client, "local", "iso") == before


async def test_the_simulator_fetches_nothing_off_the_machine(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = await _download(fresh_client, url="https://203.0.113.9/x.iso", content="iso",
                           filename="x.iso")  # fmt: skip
    status, _ = await _task(fresh_client, upid)
    assert status.endswith("failed: exit code 4")


@pytest.mark.parametrize(
    ("where", "status", "reason", "errors"),
    [
        ("local-lvm a.iso iso", 500,
         "can't upload to storage type 'lvmthin', not a file based storage!", None),
        ("nfs-backup a.iso iso", 500,
         "storage 'nfs-backup' is not configured for content-type 'iso'", None),
        ("local a.exe iso", 400, "Parameter verification failed.",
         {"filename": "wrong file extension"}),
        ("local a.iso vztmpl", 400, "Parameter verification failed.",
         {"filename": "wrong file extension"}),
        ("nope a.iso iso", 500, "storage 'nope' does not exist", None),
    ],
)  # fmt: skip
async def test_download_refusals_are_pve_worded(
    client: httpx2.AsyncClient, where: str, status: int, reason: str, errors: Any
) -> None:
    storage, filename, content = where.split()
    response = await client.post(
        f"/nodes/pve1/storage/{storage}/download-url",
        data={"url": "http://127.0.0.1:9/a", "filename": filename, "content": content},
    )
    assert (response.status_code, response.reason_phrase) == (status, reason)
    assert response.json().get("errors") == errors


async def test_protected_backup_is_kept_until_unprotected(
    fresh_client: httpx2.AsyncClient,
) -> None:
    upid = (await fresh_client.delete(_content(VM_BACKUP))).json()["data"]
    assert upid.split(":")[5:7] == ["imgdel", "101@nfs-backup"]
    status, _ = await _task(fresh_client, upid)
    volname = VM_BACKUP.split(":", 1)[1]
    assert status == f"cannot remove protected volume '{volname}' on 'nfs-backup'"
    assert VM_BACKUP in await _volids(fresh_client, "nfs-backup", "backup")
    response = await fresh_client.put(_content(VM_BACKUP), data={"protected": "0", "notes": "x"})
    assert response.status_code == 200, response.text
    info = await get_data(fresh_client, _content(VM_BACKUP))
    assert (info["protected"], info["notes"]) == (0, "x")
    status, log = await _task(
        fresh_client, (await fresh_client.delete(_content(VM_BACKUP))).json()["data"]
    )
    assert status == "OK" and f"Removed volume '{VM_BACKUP}'" in log
    assert VM_BACKUP not in await _volids(fresh_client, "nfs-backup", "backup")


async def test_only_backups_have_attributes(client: httpx2.AsyncClient) -> None:
    iso = "local:iso/debian-12.9.0-amd64-netinst.iso"
    response = await client.put(_content(iso), data={"protected": "1"})
    assert (response.status_code, response.reason_phrase) == (
        500,
        "only backups support attribute 'protected'",
    )
    response = await client.put(_content("nfs-backup:backup/x.vma"), data={"notes": "n"})
    assert response.reason_phrase == "can't find file 'nfs-backup:backup/x.vma'"


async def test_a_linked_clones_base_is_not_removed(fresh_client: httpx2.AsyncClient) -> None:
    clone = await post_upid(fresh_client, "/nodes/pve2/qemu/9000/clone", newid=300, name="lc")
    assert (await task_status(fresh_client, clone))["exitstatus"] == "OK"
    base = "local-lvm:base-9000-disk-0"
    path = f"/nodes/pve2/storage/local-lvm/content/{quote(base, safe='')}"
    upid = (await fresh_client.delete(path)).json()["data"]
    status = await task_status(fresh_client, upid)
    assert status["exitstatus"] == "base volume 'base-9000-disk-0' is still in use by linked clones"


async def test_an_iso_is_removed(fresh_client: httpx2.AsyncClient) -> None:
    iso = "local:iso/ubuntu-24.04.1-live-server-amd64.iso"
    before = await get_data(fresh_client, "/nodes/pve1/storage/local/status")
    upid = (await fresh_client.delete(_content(iso))).json()["data"]
    assert upid.split(":")[5:7] == ["imgdel", "local"]
    assert (await _task(fresh_client, upid))[0] == "OK"
    assert iso not in await _volids(fresh_client, "local", "iso")
    after = await get_data(fresh_client, "/nodes/pve1/storage/local/status")
    assert before["used"] - after["used"] == 2_773 * 1024 * 1024
    # pve2's `local` is its own directory: its copy stays
    items = await get_data(fresh_client, "/nodes/pve2/storage/local/content", content="iso")
    assert iso in {i["volid"] for i in items}


async def test_appliance_index_and_fetch(fresh_client: httpx2.AsyncClient) -> None:
    index = await get_data(fresh_client, "/nodes/pve1/aplinfo")
    alpine = next(a for a in index if a["package"] == "alpine-3.22-default")
    assert alpine["type"] == "lxc" and len(alpine["sha512sum"]) == 128
    assert "_size" not in alpine
    upid = await post_upid(fresh_client, "/nodes/pve1/aplinfo", storage="local",
                           template=alpine["template"])  # fmt: skip
    assert upid.split(":")[5:7] == ["download", alpine["template"]]
    assert (await _task(fresh_client, upid))[0] == "OK"
    volid = f"local:vztmpl/{alpine['template']}"
    assert volid in await _volids(fresh_client, "local", "vztmpl")
    again = await post_upid(fresh_client, "/nodes/pve1/aplinfo", storage="local",
                            template=alpine["template"])  # fmt: skip
    status, log = await _task(fresh_client, again)
    assert status == "OK" and any("no need to download" in line for line in log)


@pytest.mark.parametrize(
    ("params", "reason", "errors"),
    [
        ({"storage": "local", "template": "nope.tar.zst"}, "Parameter verification failed.",
         {"template": "no such template"}),
        ({"storage": "local-lvm", "template": "alpine-3.22-default_20250617_amd64.tar.xz"},
         "storage 'local-lvm' does not support templates", None),
    ],
)  # fmt: skip
async def test_appliance_fetch_refusals(
    client: httpx2.AsyncClient, params: dict[str, str], reason: str, errors: Any
) -> None:
    response = await client.post("/nodes/pve1/aplinfo", data=params)
    assert response.reason_phrase == reason
    assert response.json().get("errors") == errors
