"""Cloud-init of the simulated VMs: what changed since the drive was generated, the
generated user/network/meta data, and regenerating the drive.

Follows qemu-server: `PVE/API2/Qemu.pm` (`cloudinit_pending`, `cloudinit_update`,
`cloudinit_generated_config_dump`), `PVE/QemuServer.pm` (`$cloudinit_record_changed`,
`cloudinit_pending_properties`, `vmconfig_update_cloudinit_drive`) and
`PVE/QemuServer/Cloudinit.pm` (the `nocloud` and `configdrive2` formats).

A change to a cloud-init property records its old value in the config's
`[special:cloudinit]` section (`Guest.cloudinit`; a property that was not set is listed
under `added`); regenerating the drive (PUT .../cloudinit, or a start, which the
simulator does not model for cloud-init) empties it. The host's resolv.conf, the fallback
for `nameserver` and `searchdomain`, is the constant below.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import unquote

from .errors import failure
from .locks import check_lock
from .model import ConfigValue, Guest
from .router import Context, Params, Result, Route, api, integer, text

OPTIONS = ("cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver",
           "searchdomain", "sshkeys")  # fmt: skip
"""`$cloudinitoptions` in API2/Qemu.pm: the keys GET .../cloudinit lists."""
HOST_SEARCH = "lan"
HOST_NAMESERVERS = ("192.168.1.1",)
"""The nodes' /etc/resolv.conf (`search` and `nameserver`), as `get_dns_conf` reads it."""
HIDDEN = "*" * 10

_TRACKED = re.compile(r"(?:ipconfig|net)\d+")
_DRIVE = re.compile(r"(?:ide|sata|scsi)\d+")
_MAC = re.compile(r"=([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})")


def _tracked(key: str) -> bool:
    """`cloudinit_pending_properties`: the cloud-init keys, `ipconfigN`, `name`, `netN`."""
    return key in OPTIONS or key == "name" or _TRACKED.fullmatch(key) is not None


def tracked_values(config: Mapping[str, ConfigValue]) -> dict[str, str]:
    """The properties whose changes are recorded, as the file holds them."""
    return {key: str(value) for key, value in config.items() if _tracked(key)}


def record_changes(guest: Guest, before: Mapping[str, str]) -> None:
    """Record what an update changed, as `$cloudinit_record_changed` does for each key:
    the first old value of a key is kept, a key set anew is `added`, and a key changed back
    to its recorded value is in sync again."""
    after = tracked_values(guest.config)
    section = guest.cloudinit
    added = {key for key in str(section.pop("added", "")).split(",") if key}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        recorded = section.get(key)
        if new is not None and recorded is not None:
            if new == str(recorded):  # changed back to what the drive holds
                del section[key]
                added.discard(key)
        elif new is not None:
            if old is not None and key not in added:
                section[key] = old
            elif old is None:
                added.add(key)
        elif recorded is None and key in added:
            added.discard(key)  # set and deleted again before a regeneration
        elif recorded is None and old is not None:
            section[key] = old
    if added:
        section["added"] = ",".join(sorted(added))


def has_drive(guest: Guest) -> bool:
    """Whether the VM has a cloud-init drive (`vm-N-cloudinit` on some storage)."""
    marker = f"vm-{guest.vmid}-cloudinit"
    return any(
        _DRIVE.fullmatch(key) and marker in str(value) for key, value in guest.config.items()
    )


def _pending(guest: Guest) -> list[dict[str, object]]:
    """GET .../cloudinit: PVE's list, odd corners kept (an option changed in place is listed
    with both values, an `ipconfigN` or `netN` only when it was added or removed)."""
    conf = {key: str(value) for key, value in guest.config.items()}
    ci = {key: str(value) for key, value in guest.cloudinit.items()}
    if "cipassword" in conf:
        conf["cipassword"] = HIDDEN
    if "cipassword" in ci:
        ci["cipassword"] = HIDDEN
    added = ci.pop("added", "")
    items: list[dict[str, object]] = [
        {"key": key, "pending": conf[key]} for key in added.split(",") if key and key in conf
    ]
    for opt in OPTIONS:
        if not conf.get(opt) or opt in added:
            continue
        if opt in ci:
            items.append({"key": opt, "value": ci[opt], "pending": conf[opt]})
        else:
            items.append({"key": opt, "value": conf[opt]})
    items += [{"key": opt, "delete": 1} for opt in ci if not conf.get(opt)]
    return items


# --- the generated files (Cloudinit.pm) -------------------------------------------------


def _format(config: Mapping[str, ConfigValue]) -> str:
    """`get_cloudinit_format`: `citype`, else configdrive2 for Windows, else nocloud."""
    if "citype" in config:
        return str(config["citype"])
    return "configdrive2" if str(config.get("ostype", "")).startswith("win") else "nocloud"


def _hostname_fqdn(config: Mapping[str, ConfigValue], vmid: int) -> tuple[str, str]:
    hostname = str(config.get("name", f"VM{vmid}"))
    if "." in hostname:
        return hostname.split(".", 1)[0], hostname
    search = config.get("searchdomain")
    return hostname, f"{hostname}.{search}" if search else hostname


def _dns(config: Mapping[str, ConfigValue]) -> tuple[list[str], list[str]]:
    search = str(config.get("searchdomain", HOST_SEARCH)).split()
    servers = config.get("nameserver")
    return search, str(servers).split() if servers is not None else list(HOST_NAMESERVERS)


def user_data(config: Mapping[str, ConfigValue], vmid: int, *, mask_password: bool) -> str:
    """`cloudinit_userdata`."""
    hostname, fqdn = _hostname_fqdn(config, vmid)
    lines = ["#cloud-config", f"hostname: {hostname}", "manage_etc_hosts: true", f"fqdn: {fqdn}"]
    user = config.get("ciuser")
    if user is not None:
        lines.append(f"user: {user}")
        if user == "root":
            lines.append("disable_root: False")
    if "cipassword" in config:
        lines.append(f"password: {HIDDEN if mask_password else config['cipassword']}")
    if "sshkeys" in config:
        keys = [key.strip() for key in unquote(str(config["sshkeys"])).split("\n")]
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {key}" for key in keys if key]
    lines += ["chpasswd:", "  expire: False"]
    if user != "root":
        lines += ["users:", "  - default"]
    if int(config.get("ciupgrade", 1)):
        lines.append("package_upgrade: true")
    return "\n".join(lines) + "\n"


def _netmask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str(bits >> shift & 0xFF) for shift in (24, 16, 8, 0))


def _ipconfig(value: ConfigValue) -> dict[str, str]:
    return dict(part.split("=", 1) for part in str(value).split(",") if "=" in part)


def _split_ip4(ip: str) -> tuple[str, str]:
    if "/" not in ip:
        raise failure(f"not a CIDR: {ip}")
    address, prefix = ip.split("/", 1)
    return address, _netmask(int(prefix))


def _nics(config: Mapping[str, ConfigValue]) -> list[tuple[str, dict[str, str]]]:
    """The NICs with an `ipconfigN`, by their index as text (Perl's `sort` of `netN`)."""
    ids = sorted(key[3:] for key in config if re.fullmatch(r"net\d+", key))
    return [(i, _ipconfig(config[f"ipconfig{i}"])) for i in ids if config.get(f"ipconfig{i}")]


def nocloud_network(config: Mapping[str, ConfigValue]) -> str:
    """`nocloud_network`: cloud-init's network config version 1."""
    out = "version: 1\nconfig:\n"
    for nic, ipconfig in _nics(config):
        mac = _MAC.search(str(config[f"net{nic}"]))
        if mac is None:
            raise failure(f"network interface 'net{nic}' has no mac address")
        i = "    "
        out += f"{i}- type: physical\n{i}  name: eth{nic}\n"
        out += f"{i}  mac_address: '{mac.group(1).lower()}'\n{i}  subnets:\n"
        i += "  "
        ip = ipconfig.get("ip")
        if ip == "dhcp":
            out += f"{i}- type: dhcp4\n"
        elif ip is not None:
            address, mask = _split_ip4(ip)
            out += f"{i}- type: static\n{i}  address: '{address}'\n{i}  netmask: '{mask}'\n"
            if "gw" in ipconfig:
                out += f"{i}  gateway: '{ipconfig['gw']}'\n"
        ip6 = ipconfig.get("ip6")
        if ip6 in ("dhcp", "auto"):
            out += f"{i}- type: {'dhcp6' if ip6 == 'dhcp' else 'ipv6_slaac'}\n"
        elif ip6 is not None:
            out += f"{i}- type: static6\n{i}  address: '{ip6}'\n"
            if "gw6" in ipconfig:
                out += f"{i}  gateway: '{ipconfig['gw6']}'\n"
    search, servers = _dns(config)
    out += "    - type: nameserver\n"  # Perl's array refs are always true: always written
    if servers:
        out += "      address:\n" + "".join(f"      - '{s}'\n" for s in servers)
    if search:
        out += "      search:\n" + "".join(f"      - '{s}'\n" for s in search)
    return out


def configdrive2_network(config: Mapping[str, ConfigValue]) -> str:
    """`configdrive2_network`: a Debian interfaces file (Windows' cloudbase-init reads it)."""
    out = "auto lo\niface lo inet loopback\n\n"
    search, servers = _dns(config)
    if servers:
        out += f"        dns_nameservers {' '.join(servers)}\n"
    if search:
        out += f"        dns_search {' '.join(search)}\n"
    for nic, ipconfig in _nics(config):
        out += f"auto eth{nic}\n"
        ip = ipconfig.get("ip")
        if ip == "dhcp":
            out += f"iface eth{nic} inet dhcp\n"
        elif ip:
            address, mask = _split_ip4(ip)
            out += f"iface eth{nic} inet static\n        address {address}\n"
            out += f"        netmask {mask}\n"
            if ipconfig.get("gw"):
                out += f"        gateway {ipconfig['gw']}\n"
        ip6 = ipconfig.get("ip6")
        if ip6 in ("auto", "dhcp"):
            out += f"iface eth{nic} inet6 {ip6}\n"
        elif ip6:
            address, _, mask = ip6.partition("/")
            out += f"iface eth{nic} inet6 static\n        address {address}\n"
            out += f"        netmask {mask}\n"
            if ipconfig.get("gw6"):
                out += f"        gateway {ipconfig['gw6']}\n"
    return out


def dump(guest: Guest, kind: str) -> str:
    """`dump_cloudinit_config`: the user, network or meta data the drive would hold. The
    API's caller may configure cloud-init here, so the password is not masked."""
    config = guest.config
    nocloud = _format(config) == "nocloud"
    network = nocloud_network(config) if nocloud else configdrive2_network(config)
    if kind == "user":
        return user_data(config, guest.vmid, mask_password=False)
    if kind == "network":
        return network
    user = user_data(config, guest.vmid, mask_password=False)
    uuid = hashlib.sha1((user + network).encode(), usedforsecurity=False).hexdigest()
    if nocloud:
        return f"instance-id: {uuid}\n"
    return (
        f'{{\n     "uuid": "{uuid}",\n'
        '     "network_config": { "content_path": "/content/0000" }\n}\n'
    )


# --- handlers ----------------------------------------------------------------------------


def _vm(ctx: Context, params: Params) -> Guest:
    ctx.state.node(text(params, "node"))
    return ctx.state.require_guest(text(params, "node"), "qemu", integer(params, "vmid"))


def _get(ctx: Context, params: Params) -> Result:
    return Result(_pending(_vm(ctx, params)))


def _put(ctx: Context, params: Params) -> Result:
    """`cloudinit_update`: under the config lock; without a cloud-init drive it does
    nothing, and says nothing (`vmconfig_update_cloudinit_drive` returns early)."""
    guest = _vm(ctx, params)
    check_lock(guest)
    if has_drive(guest):
        guest.cloudinit.clear()
    return Result(None)


def _dump(ctx: Context, params: Params) -> Result:
    return Result(dump(_vm(ctx, params), text(params, "type")))


ROUTES: tuple[Route, ...] = (
    api("GET", "/nodes/{node}/qemu/{vmid}/cloudinit", _get),
    api("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", _put),
    api("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump", _dump),
)
