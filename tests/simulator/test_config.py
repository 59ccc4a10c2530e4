"""Guest configuration over HTTPS: digest, pending changes, revert, and PVE's refusals."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from .conftest import get_data, post_upid, task_status

pytestmark = pytest.mark.anyio

VM = "/nodes/pve1/qemu/101"  # stopped
RUNNING_VM = "/nodes/pve1/qemu/100"
CT = "/nodes/pve1/lxc/201"  # stopped
RUNNING_CT = "/nodes/pve1/lxc/200"


async def _put(client: httpx2.AsyncClient, path: str, **params: Any) -> httpx2.Response:
    return await client.put(f"{path}/config", data=params)


async def _pending(client: httpx2.AsyncClient, path: str) -> dict[str, dict[str, Any]]:
    items = await get_data(client, f"{path}/pending")
    return {item["key"]: item for item in items}


async def test_a_stopped_guest_takes_changes_at_once(fresh_client: httpx2.AsyncClient) -> None:
    before = await get_data(fresh_client, f"{VM}/config")
    response = await _put(fresh_client, VM, cores=4, memory="2048", delete="onboot")
    assert response.status_code == 200, response.text
    assert response.json() == {"data": None}
    current = await get_data(fresh_client, f"{VM}/config", current=1)
    assert (current["cores"], current["memory"]) == (4, "2048")
    assert "onboot" not in current
    assert current["digest"] != before["digest"]
    pending = await _pending(fresh_client, VM)
    assert not [item for item in pending.values() if "pending" in item or "delete" in item]


async def test_a_running_vm_keeps_what_it_cannot_hotplug_pending(
    fresh_client: httpx2.AsyncClient,
) -> None:
    # Memory and cores wait for the next start (hotplug is network,disk,usb); the name,
    # the tags and a NIC apply at once; numa's deletion waits too.
    response = await _put(
        fresh_client,
        RUNNING_VM,
        memory="8192",
        cores=4,
        name="web01-new",
        net1="virtio=BC:24:11:00:00:01,bridge=vmbr0",
        delete="numa",
    )
    assert response.status_code == 200, response.text
    current = await get_data(fresh_client, f"{RUNNING_VM}/config", current=1)
    assert (current["memory"], current["cores"], current["numa"]) == ("4096", 2, 0)
    assert current["name"] == "web01-new"
    assert current["net1"].startswith("virtio=")
    with_pending = await get_data(fresh_client, f"{RUNNING_VM}/config")
    assert (with_pending["memory"], with_pending["cores"]) == ("8192", 4)
    assert "numa" not in with_pending
    pending = await _pending(fresh_client, RUNNING_VM)
    assert pending["memory"] == {"key": "memory", "value": "4096", "pending": "8192"}
    assert pending["cores"] == {"key": "cores", "value": "2", "pending": "4"}
    assert pending["numa"] == {"key": "numa", "value": "0", "delete": 1}
    assert pending["name"] == {"key": "name", "value": "web01-new"}
    assert pending["digest"]["value"] == with_pending["digest"]

    # A revert drops the pending value and the pending deletion.
    response = await _put(fresh_client, RUNNING_VM, revert="memory,numa")
    assert response.status_code == 200, response.text
    pending = await _pending(fresh_client, RUNNING_VM)
    assert pending["memory"] == {"key": "memory", "value": "4096"}
    assert pending["numa"] == {"key": "numa", "value": "0"}
    assert pending["cores"]["pending"] == "4"

    # The next start applies what is still pending.
    await post_upid(fresh_client, f"{RUNNING_VM}/status/stop")
    await post_upid(fresh_client, f"{RUNNING_VM}/status/start")
    current = await get_data(fresh_client, f"{RUNNING_VM}/config", current=1)
    assert current["cores"] == 4
    assert "pending" not in (await _pending(fresh_client, RUNNING_VM))["cores"]


async def test_memory_hotplug_grows_at_once_and_shrinks_at_the_next_start(
    fresh_client: httpx2.AsyncClient,
) -> None:
    assert (await _put(fresh_client, VM, hotplug="network,disk,usb,memory")).status_code == 200
    await post_upid(fresh_client, f"{VM}/status/start")
    assert (await _put(fresh_client, VM, memory="6144")).status_code == 200
    assert (await get_data(fresh_client, f"{VM}/config", current=1))["memory"] == "6144"
    assert (await _put(fresh_client, VM, memory="2048")).status_code == 200
    assert (await get_data(fresh_client, f"{VM}/config", current=1))["memory"] == "6144"
    assert (await _pending(fresh_client, VM))["memory"]["pending"] == "2048"
    # A reboot is a stop and a start: what is pending applies.
    await post_upid(fresh_client, f"{VM}/status/reboot")
    assert (await get_data(fresh_client, f"{VM}/config", current=1))["memory"] == "2048"


async def test_cdrom_is_written_as_ide2(fresh_client: httpx2.AsyncClient) -> None:
    response = await _put(fresh_client, VM, cdrom="local:iso/debian-13.iso")
    assert response.status_code == 200, response.text
    config = await get_data(fresh_client, f"{VM}/config")
    assert config["ide2"] == "local:iso/debian-13.iso,media=cdrom"
    assert "cdrom" not in config


async def test_a_nic_without_a_mac_gets_one(fresh_client: httpx2.AsyncClient) -> None:
    assert (await _put(fresh_client, VM, net1="virtio,bridge=vmbr0,tag=20")).status_code == 200
    net1 = (await get_data(fresh_client, f"{VM}/config"))["net1"]
    assert re.fullmatch(r"virtio=BC:24:11(:[0-9A-F]{2}){3},bridge=vmbr0,tag=20", net1), net1
    assert (await _put(fresh_client, CT, net1="name=eth1,bridge=vmbr0,ip=dhcp")).status_code == 200
    ct_net1 = (await get_data(fresh_client, f"{CT}/config"))["net1"]
    assert re.fullmatch(
        r"name=eth1,bridge=vmbr0,ip=dhcp,hwaddr=BC:24:11(:[0-9A-F]{2}){3},type=veth", ct_net1
    ), ct_net1


async def test_a_running_container_hotplugs_memory_but_not_its_arch(
    fresh_client: httpx2.AsyncClient,
) -> None:
    response = await _put(fresh_client, RUNNING_CT, memory=1024, arch="arm64")
    assert response.status_code == 200, response.text
    current = await get_data(fresh_client, f"{RUNNING_CT}/config", current=1)
    assert (current["memory"], current["arch"]) == (1024, "amd64")
    assert (await _pending(fresh_client, RUNNING_CT))["arch"]["pending"] == "arm64"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # qemu-server PVE/API2/Qemu.pm $update_vm_api
        (VM, "checksum mismatch (file change by other user?)"),
        # pve-common PVE::Tools::assert_if_modified, from pve-container's update_vm
        (CT, "detected modified configuration - file changed by other user? Try again."),
    ],
)
async def test_a_stale_digest_is_refused(
    fresh_client: httpx2.AsyncClient, path: str, message: str
) -> None:
    config = await get_data(fresh_client, f"{path}/config")
    old = config["digest"]
    # Setting a value the guest already has leaves the file, and so the digest, as it was.
    assert (await _put(fresh_client, path, cores=config["cores"], digest=old)).status_code == 200
    assert (await _put(fresh_client, path, cores=3, digest=old)).status_code == 200
    response = await _put(fresh_client, path, cores=4, digest=old)
    assert response.status_code == 500
    assert response.json()["message"] == message + "\n"
    assert (await get_data(fresh_client, f"{path}/config"))["cores"] == 3


async def test_post_config_runs_as_a_task(fresh_client: httpx2.AsyncClient) -> None:
    upid = await post_upid(fresh_client, f"{VM}/config", description="from a task")
    assert upid.split(":")[5] == "qmconfig"
    assert (await task_status(fresh_client, upid))["exitstatus"] == "OK"
    assert (await get_data(fresh_client, f"{VM}/config"))["description"] == "from a task"
    # With background_delay, a task that is already over answers null.
    response = await fresh_client.post(f"{VM}/config", data={"tags": "x", "background_delay": 3})
    assert response.json() == {"data": None}


async def test_post_config_checks_before_forking(fresh_client: httpx2.AsyncClient) -> None:
    response = await fresh_client.post(f"{VM}/config", data={"cores": 2, "digest": "0" * 40})
    assert response.status_code == 500
    assert response.reason_phrase == "checksum mismatch (file change by other user?)"


NOT_IN_SCHEMA = (
    "property is not defined in schema and the schema does not allow additional properties"
)


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"nmae": "x"}, {"nmae": NOT_IN_SCHEMA}),
        ({"net32": "virtio,bridge=vmbr0"}, {"net32": NOT_IN_SCHEMA}),  # net0..net31
        ({"net01": "virtio,bridge=vmbr0"}, {"net01": NOT_IN_SCHEMA}),
        ({"cores": 0}, {"cores": "value must have a minimum value of 1"}),
        ({"delete": "bogus"}, {"delete": "unknown option 'bogus'"}),
        ({"revert": "bogus"}, {"revert": "unknown option 'bogus'"}),
        ({"cores": 2, "delete": "cores"},
         {"delete": "you can't use '-cores' and -delete cores' at the same time"}),
        ({"delete": "cores", "revert": "cores"},
         {"revert": "you can't use '-delete cores' and -revert cores' at the same time"}),
        ({"force": 1}, {"delete": "missing property required by 'force'"}),
        ({"skiplock": 1}, {"skiplock": "Only root may use this option."}),
    ],
)  # fmt: skip
async def test_bad_updates_are_refused_with_pve_texts(
    client: httpx2.AsyncClient, params: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await _put(client, VM, **params)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == errors


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (VM, {}, "no options specified"),
        (VM, {"balloon": 8192, "memory": "4096"},
         "balloon value too large (must be smaller than assigned memory)"),
        ("/nodes/pve2/qemu/101", {"cores": 2},
         "Configuration file 'nodes/pve2/qemu-server/101.conf' does not exist"),
        ("/nodes/pve9/qemu/101", {},  # the proxy to the node fails before the handler runs
         "hostname lookup 'pve9' failed - failed to get address info for: pve9: "
         "Name or service not known"),
    ],
)  # fmt: skip
async def test_refusals_after_the_schema_are_500(
    client: httpx2.AsyncClient, path: str, params: dict[str, Any], message: str
) -> None:
    response = await _put(client, path, **params)
    assert response.status_code == 500, response.text
    assert response.reason_phrase == message


async def test_perl_patterns_are_checked(client: httpx2.AsyncClient) -> None:
    # The schema prints pve-container's patterns in Perl's `(?^:...)` form.
    response = await _put(client, CT, entrypoint="/sbin/init\n")
    assert response.status_code == 400
    assert response.json()["errors"] == {"entrypoint": "value does not match the regex pattern"}
    assert (await _put(client, CT, entrypoint="/sbin/init")).status_code == 200


async def test_the_cloud_init_password_is_never_shown(fresh_client: httpx2.AsyncClient) -> None:
    assert (await _put(fresh_client, VM, cipassword="s3cret")).status_code == 200
    assert (await get_data(fresh_client, f"{VM}/config"))["cipassword"] == "**********"
    assert (await _pending(fresh_client, VM))["cipassword"]["value"] == "**********"


async def test_snapshot_and_current_do_not_go_together(client: httpx2.AsyncClient) -> None:
    response = await client.get(
        f"{RUNNING_VM}/config", params={"snapshot": "pre-upgrade", "current": 1}
    )
    assert response.status_code == 400
    both = "cannot use 'snapshot' parameter with 'current'"
    assert response.json()["errors"] == {"snapshot": both, "current": both}


async def test_property_string_keys_come_from_the_index(fresh_client: httpx2.AsyncClient) -> None:
    # The hand-kept key table this replaced had the same top-level keys as the schema but
    # kept every property string verbatim, knowing none of its keys; the index knows them
    # (agent's fstrim_cloned_disks, a NIC's tag and firewall, PVE's on/off booleans).
    response = await _put(
        fresh_client,
        VM,
        agent="1,fstrim_cloned_disks=1,type=isa",
        net1="virtio,bridge=vmbr0,tag=20,firewall=on",
        memory="current=2048",
    )
    assert response.status_code == 200, response.text
    config = await get_data(fresh_client, f"{VM}/config")
    assert config["agent"] == "1,fstrim_cloned_disks=1,type=isa"
    assert config["net1"].endswith(",bridge=vmbr0,tag=20,firewall=on")


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        # pve-common JSONSchema.pm parse_property_string's die, under check_prop's prefix.
        ({"agent": "1,fstrim=1"},
         {"agent": "invalid format - invalid key in comma-separated list property: fstrim\n"}),
        ({"net1": "virtio,bridge=vmbr0,tag=5000"},
         {"net1": "invalid format - format error\n"
                  "net1.tag: value must have a maximum value of 4094\n"}),
        ({"agent": "fstrim_cloned_disks=1"},
         {"agent": "invalid format - format error\n"
                   "agent.enabled: property is missing and it is not optional\n"}),
        ({"agent": "1,type=pci"},
         {"agent": "invalid format - format error\n"
                   "agent.type: value 'pci' does not have a value in the enumeration "
                   "'virtio, isa'\n"}),
        ({"agent": "1,0"},
         {"agent": "invalid format - duplicate key in comma-separated list property: enabled\n"}),
        ({"agent": "1,=x"},
         {"agent": "invalid format - missing key in comma-separated list property\n"}),
        ({"ciuserx": "ops"}, {"ciuserx": NOT_IN_SCHEMA}),
    ],
)  # fmt: skip
async def test_what_the_index_does_not_know_is_refused_with_pve_texts(
    client: httpx2.AsyncClient, params: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await _put(client, VM, **params)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == errors
    assert response.json()["message"].startswith("Parameter verification failed.")


async def test_a_vm_whose_nic_names_a_bridge_the_node_does_not_run_fails_to_start(
    fresh_client: httpx2.AsyncClient,
) -> None:
    # PVE takes the NIC into the config (a stopped VM), and the start applies it, then
    # dies reading the bridge's MTU (qemu-server config_to_command, read_bridge_mtu).
    assert (await _put(fresh_client, VM, net1="virtio,bridge=vmbr9")).status_code == 200
    upid = await post_upid(fresh_client, f"{VM}/status/start")
    status = await task_status(fresh_client, upid)
    assert status["exitstatus"] == "bridge 'vmbr9' does not exist", status
    assert (await get_data(fresh_client, f"{VM}/status/current"))["status"] == "stopped"
    assert (await get_data(fresh_client, f"{VM}/config", current=1))["net1"].endswith("vmbr9")
    # An active bridge (pve1's vmbr1) starts.
    assert (await _put(fresh_client, VM, net1="virtio,bridge=vmbr1")).status_code == 200
    await post_upid(fresh_client, f"{VM}/status/start")
    assert (await get_data(fresh_client, f"{VM}/status/current"))["status"] == "running"
