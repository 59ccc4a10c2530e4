"""The storage tools end to end: the MCP SDK client, the gateway and a simulator.

The declared examples and rejects run in test_examples.py; these are issue 12's storage
scenario (an ISO served on loopback by the test, allow-listed, downloaded through the
simulator, seen in the content, deleted), the SSRF guard with and without the allow-list,
a redirect the gateway cannot see, a volume in use refused naming the guest and the key,
usage that agrees with the simulator, paging, and the appliance index.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from pvemcp.simulator.server import SimulatorHandle
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import cluster_for, make_gateway, read_audit
from tests.simulator.test_storage import ISO, FileServer
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session, error_of

pytestmark = pytest.mark.anyio

SEEDED_ISO = "local:iso/debian-12.9.0-amd64-netinst.iso"


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer({"/isos/netinst.iso": ISO}) as server:
        yield server


@asynccontextmanager
async def listing(
    sim: SimulatorHandle, audit_path: Path, hosts: list[str], internal: list[str]
) -> AsyncIterator[Session]:
    """A session whose cluster sets download_hosts and download_internal_hosts."""
    cluster = cluster_for(sim, download_hosts=hosts, download_internal_hosts=internal)
    gateway = make_gateway({"demo": cluster}, audit_path, (sim.token_secret,))
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            yield Session(client, [], sim)
    finally:
        await gateway.aclose()


@pytest.fixture
async def allowed(own_sim: SimulatorHandle, audit_path: Path) -> AsyncIterator[Session]:
    """A session whose cluster allow-lists 127.0.0.1, an internal address."""
    async with listing(own_sim, audit_path, ["127.0.0.1"], ["127.0.0.1"]) as session:
        yield session


async def _confirmed(session: Session, tool: str, **arguments: Any) -> dict[str, Any]:
    """A destructive call as a user approves it: the plan first, then with the token."""
    ask = error_of(await call(session, tool, **arguments))
    assert ask is not None and ask["code"] == "confirmation_required", ask
    return ok(await call(session, tool, **arguments, confirm_token=ask["details"]["confirm_token"]))


async def _isos(session: Session, node: str = "pve1") -> set[str]:
    answer = ok(await call(session, "proxmox_storage_content", storage="local", content="iso",
                           node=node))  # fmt: skip
    return {row["volid"] for row in answer["volumes"]}


async def test_scenario_download_from_loopback_see_it_delete_it(
    allowed: Session, files: FileServer, audit_path: Path
) -> None:
    digest = hashlib.sha512(ISO).hexdigest()
    url = files.url("/isos/netinst.iso")
    done = ok(await call(allowed, "proxmox_storage_download", url=url, storage="local",
                         checksum=digest))  # fmt: skip
    assert done["exitstatus"] == "OK"
    assert (done["volid"], done["size"]) == ("local:iso/netinst.iso", len(ISO))
    assert "local:iso/netinst.iso" in await _isos(allowed)
    assert "local:iso/netinst.iso" not in await _isos(allowed, "pve2")  # `local` is per node
    info = ok(await call(allowed, "proxmox_storage_volume_get", volid="local:iso/netinst.iso"))
    assert info["path"] == "/var/lib/vz/template/iso/netinst.iso" and info["used_by"] == []
    gone = await _confirmed(allowed, "proxmox_storage_volume_delete", volid="local:iso/netinst.iso")
    assert gone["exitstatus"] == "OK"
    assert "local:iso/netinst.iso" not in await _isos(allowed)
    done_tools = [r["what"]["tool"] for r in read_audit(audit_path) if r["phase"] == "outcome"]
    assert done_tools.count("proxmox_storage_download") == 1
    assert done_tools.count("proxmox_storage_volume_delete") == 1
    intent = next(r for r in read_audit(audit_path) if r["phase"] == "intent")
    assert "127.0.0.1" in str(intent)


async def test_loopback_is_refused_unless_listed(session: Session, files: FileServer) -> None:
    for url in (files.url("/isos/netinst.iso"),
                files.url("/isos/netinst.iso").replace("127.0.0.1", "localhost")):  # fmt: skip
        error = refused(await call(session, "proxmox_storage_download", url=url, storage="local"))
        assert (error["code"], error["field"]) == ("url_not_allowed", "url")
        assert "loopback" in error["message"] and "download_internal_hosts" in error["hint"]
    assert session.writes() == []


async def test_download_hosts_is_an_allow_list(
    own_sim: SimulatorHandle, audit_path: Path, files: FileServer
) -> None:
    url = files.url("/isos/netinst.iso")
    public = "93.184.215.14"
    async with listing(own_sim, audit_path, ["*.debian.org", public], ["127.0.0.1"]) as session:
        for refused_url in (url, "https://debian.org.evil.example/x.iso"):
            error = refused(await call(session, "proxmox_storage_download", url=refused_url,
                                       storage="local"))  # fmt: skip
            assert (error["code"], error["field"]) == ("url_not_allowed", "url")
            assert "download_hosts" in error["message"] and "*.debian.org" in error["hint"]
        plan = ok(await call(session, "proxmox_storage_download", storage="local", dry_run=True,
                             url=f"https://{public}/x.iso"))  # fmt: skip
        assert plan["plan"]["hosts"] == [public]
        assert session.writes() == []
    async with listing(own_sim, audit_path, ["127.0.0.1"], []) as session:
        error = refused(await call(session, "proxmox_storage_download", url=url, storage="local"))
        assert "loopback" in error["message"], "listed, but not as an internal host"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://169.254.169.254/latest/x.iso", "link-local"),
        ("http://172.16.5.4/x.iso", "private"),
        ("http://[fe80::1]/x.iso", "link-local"),
        ("http://224.0.0.1/x.iso", "multicast"),
        ("http://0.0.0.0/x.iso", "unspecified"),
        ("file:///var/lib/vz/x.iso", "scheme 'file'"),
        ("ftp://93.184.215.14/x.iso", "scheme 'ftp'"),
    ],
)
async def test_ssrf_urls_are_refused_naming_the_field(
    own_sim: SimulatorHandle, audit_path: Path, url: str, words: str
) -> None:
    """Even with 127.0.0.1 an internal host: the list names hosts, not ranges."""
    async with listing(own_sim, audit_path, [], ["127.0.0.1"]) as session:
        error = refused(await call(session, "proxmox_storage_download", url=url, storage="local"))
    assert (error["code"], error["field"]) == ("url_not_allowed", "url")
    assert words in error["message"], error


async def test_a_redirect_is_the_nodes_and_the_plan_says_so(
    allowed: Session, files: FileServer
) -> None:
    url = files.url("/away")  # answers 302 to http://10.0.0.1/x.iso
    plan = ok(await call(allowed, "proxmox_storage_download", url=url, storage="local",
                         filename="away.iso", dry_run=True))["plan"]  # fmt: skip
    assert any("redirects" in w for w in plan["warnings"])
    assert plan["hosts"] == ["127.0.0.1"]
    failed = refused(await call(allowed, "proxmox_storage_download", url=url, storage="local",
                                filename="away.iso"))  # fmt: skip
    assert failed["code"] == "task_failed"
    assert failed["details"]["exitstatus"].endswith("exit code 4")
    assert "local:iso/away.iso" not in await _isos(allowed)


async def test_a_wrong_checksum_fails_the_task_and_leaves_nothing(
    allowed: Session, files: FileServer
) -> None:
    failed = refused(await call(allowed, "proxmox_storage_download",
                                url=files.url("/isos/netinst.iso"), storage="local",
                                checksum="0" * 64))  # fmt: skip
    assert failed["code"] == "task_failed"
    assert failed["details"]["exitstatus"].startswith("checksum mismatch: got '")
    assert "local:iso/netinst.iso" not in await _isos(allowed)
    error = refused(await call(allowed, "proxmox_storage_download", url=files.url("/a.iso"),
                               storage="local", checksum="0" * 63))  # fmt: skip
    assert (error["code"], error["field"]) == ("invalid_argument", "checksum")
    assert "sha256" in error["message"]


async def test_a_volume_in_use_is_refused_naming_guest_and_key(session: Session) -> None:
    with session.sim.state.lock:
        session.sim.state.guests[101].config["ide2"] = f"{SEEDED_ISO},media=cdrom"
    info = ok(await call(session, "proxmox_storage_volume_get", volid=SEEDED_ISO))
    assert info["used_by"] == ["qemu 101 (web02) ide2"]
    error = refused(await call(session, "proxmox_storage_volume_delete", volid=SEEDED_ISO))
    assert (error["code"], error["field"]) == ("in_use", "volid")
    assert error["details"]["used_by"] == ["qemu 101 (web02) ide2"]
    disk = refused(await call(session, "proxmox_storage_volume_delete",
                              volid="local-lvm:vm-100-disk-0"))  # fmt: skip
    assert disk["message"].startswith("local-lvm:vm-100-disk-0 is used by qemu 100 (web01) scsi0")
    assert session.writes() == []


async def test_a_snapshot_keeps_its_volume(session: Session) -> None:
    """A disk detached after a snapshot is still the snapshot's (PVE's is_volume_in_use)."""
    with session.sim.state.lock:
        guest = session.sim.state.guests[100]
        disk = str(guest.config.pop("scsi0"))
    error = refused(await call(session, "proxmox_storage_volume_delete",
                               volid=disk.split(",", maxsplit=1)[0]))  # fmt: skip
    assert "snapshot pre-upgrade scsi0" in error["message"], error


async def test_storage_list_agrees_with_the_simulator(session: Session) -> None:
    answer = ok(await call(session, "proxmox_storage_list"))
    rows = {row["storage"]: row for row in answer["storages"]}
    assert {"local", "local-lvm", "nfs-backup"} <= set(rows)
    assert rows["nfs-backup"]["shared"] and rows["local"]["type"] == "dir"
    assert "snippets" in rows["local"]["content"]
    volumes = session.sim.state.volumes
    total, used = volumes.usage(volumes.storages["local-lvm"], "pve2")
    pve2 = next(n for n in rows["local-lvm"]["nodes"] if n["node"] == "pve2")
    assert pve2["used_pct"] == round(100 * used / total, 1)
    only = ok(await call(session, "proxmox_storage_list", node="pve3", content="backup"))
    assert [(r["storage"], [n["node"] for n in r["nodes"]]) for r in only["storages"]] == [
        ("local", ["pve3"]),
        ("nfs-backup", ["pve3"]),
    ]
    assert all("backup" in r["content"] for r in only["storages"])


async def test_content_pages_add_up(session: Session) -> None:
    first = ok(await call(session, "proxmox_storage_content", storage="local", content="iso",
                          limit=1))  # fmt: skip
    second = ok(await call(session, "proxmox_storage_content", storage="local", content="iso",
                           offset=1, limit=1))  # fmt: skip
    assert (first["total"], first["next_offset"], second.get("next_offset")) == (2, 1, None)
    assert {first["volumes"][0]["volid"], second["volumes"][0]["volid"]} == {
        SEEDED_ISO,
        "local:iso/ubuntu-24.04.1-live-server-amd64.iso",
    }


async def test_appliance_index_and_fetch(session: Session) -> None:
    listed = ok(await call(session, "proxmox_appliance_list", search="rocky"))["appliances"]
    (rocky,) = listed
    assert rocky["section"] == "system" and rocky["os"] == "rockylinux-9"
    done = ok(await call(session, "proxmox_appliance_fetch", template=rocky["template"],
                         storage="local"))  # fmt: skip
    assert done["exitstatus"] == "OK"
    content = ok(await call(session, "proxmox_storage_content", storage="local",
                            content="vztmpl"))  # fmt: skip
    assert f"local:vztmpl/{rocky['template']}" in {v["volid"] for v in content["volumes"]}
    error = refused(await call(session, "proxmox_appliance_fetch", template="rockylinux-10",
                               storage="local"))  # fmt: skip
    assert error["field"] == "template" and rocky["template"] in error["hint"]


async def test_a_protected_backup_is_unprotected_then_deleted(session: Session) -> None:
    backup = "nfs-backup:backup/vzdump-qemu-101-2026_11_30-23_00_02.vma.zst"
    error = refused(await call(session, "proxmox_storage_volume_delete", volid=backup))
    assert (error["code"], error["field"]) == ("protected", "volid")
    assert "proxmox_storage_volume_update" in error["hint"]
    ok(await call(session, "proxmox_storage_volume_update", volid=backup, protected=False,
                  notes="monthly, released"))  # fmt: skip
    info = ok(await call(session, "proxmox_storage_volume_get", volid=backup))
    assert (info.get("protected"), info["notes"]) == (None, "monthly, released")
    assert info["used_by"] == [], "a backup is no guest's config"
    assert (await _confirmed(session, "proxmox_storage_volume_delete", volid=backup))[
        "exitstatus"
    ] == "OK"
    listed = ok(await call(session, "proxmox_storage_content", storage="nfs-backup", vmid=101))
    assert backup not in {v["volid"] for v in listed["volumes"]}
