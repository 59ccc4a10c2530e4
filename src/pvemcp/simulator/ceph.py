"""Ceph, as a hyper-converged PVE cluster runs it: monitors, managers, OSDs, pools, CephFS.

Optional: the demo cluster has no Ceph unless the simulator is started with `ceph=True`
(`pvemcp simulate --ceph`), because most small clusters have none and the other
toolsets' tests expect the plain demo. Without it every Ceph route answers as a node
without the packages does: pve-manager `PVE/Ceph/Tools.pm` `check_ceph_installed`
dies `binary not installed: /usr/bin/ceph-mon` (HTTP 500) before anything else.

With it: a monitor and two OSDs on each of pve1..pve3, managers on pve1 (active) and
pve2, pools `.mgr`, `rbd` (the RBD storage `ceph-rbd`), `cephfs_data` and
`cephfs_metadata` for the CephFS `cephfs` whose MDS runs on pve1. osd.5's disk failed:
it is down and out and its crash is recent, so health starts at HEALTH_WARN
(RECENT_CRASH). Health is computed from the state as Ceph's checks name it
(`OSD_DOWN`, `OSDMAP_FLAGS`, `PG_DEGRADED`, `PG_AVAILABILITY`, `RECENT_CRASH`), with
replicated pools and CRUSH's `host` failure domain: a pool's placement groups are
undersized when fewer hosts than its `size` have an OSD that is up and in, inactive
below its `min_size`. The object and PG counts are synthetic (a share of each pool's
PGs), the check names and message shapes are Ceph's.

Methods follow pve-manager `PVE/API2/Ceph/OSD.pm` (`in`/`out`: `no such OSD`),
`Ceph/Pool.pm` (create, update and destroy as `cephcreatepool`, `cephsetpool` and
`cephdestroypool` workers, its defaults and `ceph pool '...' still in use by storage
'...'`), `Ceph/MON.pm`, `MGR.pm`, `MDS.pm`, `FS.pm` and `PVE/API2/Cluster/Ceph.pm`
(status, flags); 16 of the schema's 48 Ceph methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import failure
from .model import Storage
from .router import Context, Params, Result, Route, api, integer, text
from .tasks import Plan

if TYPE_CHECKING:
    from .state import ClusterState

TiB = 1024**4
GiB = 1024**3
VERSION = "19.2.3"
VERSION_LONG = f"ceph version {VERSION} (c44bc49e7a57a87d84dfff2a077a2058aa2172e2) squid (stable)"
FSID = "5b7c8a41-2f0e-4b61-9d3e-3c8f1a6e2d90"
OSD_BYTES = 1 * TiB
TASK_SECONDS = 3.0
FLAGS = {
    "nobackfill": "Backfilling of PGs is suspended.",
    "nodeep-scrub": "Deep Scrubbing is disabled.",
    "nodown": "OSD failure reports are being ignored, such that the monitors will not mark "
    "OSDs down.",
    "noin": "OSDs that were previously marked out will not be marked back in when they start.",
    "noout": "OSDs will not automatically be marked out after the configured interval.",
    "norebalance": "Rebalancing of PGs is suspended.",
    "norecover": "Recovery of PGs is suspended.",
    "noscrub": "Scrubbing is disabled.",
    "notieragent": "Cache tiering activity is suspended.",
    "noup": "OSDs are not allowed to start.",
    "pause": "Pauses read and writes.",
}
"""The flags /cluster/ceph/flags reports, with PVE's descriptions
(`PVE/Ceph/Tools.pm` `get_possible_osd_flags`)."""
NOT_INSTALLED = "binary not installed: /usr/bin/ceph-mon"


@dataclass
class Osd:
    id: int
    host: str
    up: bool = True
    inside: bool = True
    """`in` in Ceph's words: CRUSH maps data to it."""
    used: int = 0


@dataclass
class Pool:
    name: str
    id: int
    size: int = 3
    min_size: int = 2
    pg_num: int = 128
    application: str = "rbd"
    pg_autoscale_mode: str = "on"
    stored: int = 0


@dataclass
class Ceph:
    """One Ceph cluster spanning the PVE nodes."""

    osds: dict[int, Osd]
    pools: dict[str, Pool]
    mons: list[str]
    mgrs: list[str]
    """The first is active, the others standby."""
    mds: dict[str, str] = field(default_factory=dict)
    """MDS name -> node."""
    fs: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Filesystem -> (metadata pool, data pool)."""
    flags: set[str] = field(default_factory=set)
    crashes: list[tuple[str, str, float]] = field(default_factory=list)
    """Recent daemon crashes: (daemon, host, when)."""

    def serving_hosts(self) -> set[str]:
        """Hosts with an OSD that is up and in: CRUSH's failure domain."""
        return {osd.host for osd in self.osds.values() if osd.up and osd.inside}


def demo_ceph(storages: list[Storage], nodes: list[str], now: float) -> Ceph:
    """Ceph on every node, and the RBD storage `ceph-rbd` on its pool `rbd` (appended to
    `storages`)."""
    osds = {i: Osd(i, nodes[i // 2], used=(180 + 7 * i) * GiB) for i in range(2 * len(nodes))}
    failed = osds[len(osds) - 1]
    failed.up = failed.inside = False
    pools = {}
    for index, (name, pg_num, app, stored) in enumerate(
        ((".mgr", 1, "mgr", 3 * 2**20), ("rbd", 128, "rbd", 310 * GiB),
         ("cephfs_data", 128, "cephfs", 42 * GiB), ("cephfs_metadata", 32, "cephfs", GiB))
    ):  # fmt: skip
        pools[name] = Pool(name, index + 1, pg_num=pg_num, application=app, stored=stored)
    storages.append(
        Storage("ceph-rbd", "rbd", ("images", "rootdir"), shared=True,
                usage={n: (2 * TiB, 0) for n in nodes}, extra={"pool": "rbd", "krbd": 0})
    )  # fmt: skip
    return Ceph(
        osds,
        pools,
        mons=list(nodes),
        mgrs=nodes[:2],
        mds={nodes[0]: nodes[0]},
        fs={"cephfs": ("cephfs_metadata", "cephfs_data")},
        crashes=[(f"osd.{failed.id}", failed.host, now - 3 * 3600)],
    )


def _ceph(ctx: Context) -> Ceph:
    """The cluster's Ceph, or PVE's error on a node without the Ceph packages."""
    ceph = ctx.state.ceph
    if ceph is None:
        raise failure(NOT_INSTALLED)
    return ceph


def _node(ctx: Context, params: Params) -> str:
    return ctx.state.node(text(params, "node")).name


# --- health --------------------------------------------------------------------------


def _check(message: str, count: int, detail: list[str]) -> dict[str, Any]:
    return {"severity": "HEALTH_WARN", "muted": False,
            "summary": {"message": message, "count": count},
            "detail": [{"message": line} for line in detail]}  # fmt: skip


def _pool_pgs(ceph: Ceph, pool: Pool) -> tuple[int, int]:
    """(undersized, inactive) PGs of a pool: all of them once too few hosts serve it;
    with a down OSD still in, the share of PGs that map to it are degraded."""
    hosts = len(ceph.serving_hosts())
    if hosts < pool.min_size:
        return pool.pg_num, pool.pg_num
    if hosts < pool.size:
        return pool.pg_num, 0
    down_in = sum(1 for osd in ceph.osds.values() if osd.inside and not osd.up)
    in_osds = max(sum(1 for osd in ceph.osds.values() if osd.inside), 1)
    return (pool.pg_num * pool.size * down_in + in_osds - 1) // in_osds, 0


def health(ceph: Ceph, now: float) -> dict[str, Any]:
    """`ceph health detail` as JSON: the checks that the state raises."""
    checks: dict[str, Any] = {}
    if ceph.flags:
        flags = ",".join(sorted(ceph.flags))
        checks["OSDMAP_FLAGS"] = _check(f"{flags} flag(s) set", len(ceph.flags), [])
    down = [o for o in ceph.osds.values() if o.inside and not o.up]
    if down:
        checks["OSD_DOWN"] = _check(
            f"{len(down)} osds down", len(down),
            [f"osd.{o.id} (root=default,host={o.host}) is down" for o in down],
        )  # fmt: skip
    degraded_pgs = inactive_pgs = objects = total_objects = 0
    undersized = [p.name for p in ceph.pools.values() if len(ceph.serving_hosts()) < p.size]
    for pool in ceph.pools.values():
        pgs, inactive = _pool_pgs(ceph, pool)
        pool_objects = max(pool.stored // (4 * 2**20), 1) * pool.size
        total_objects += pool_objects
        objects += pool_objects * pgs // max(pool.pg_num * pool.size, 1) if pgs else 0
        degraded_pgs += pgs
        inactive_pgs += inactive
    if inactive_pgs:
        checks["PG_AVAILABILITY"] = _check(
            f"Reduced data availability: {inactive_pgs} pgs inactive", inactive_pgs,
            [f"pool '{p}' has fewer than min_size replicas" for p in undersized],
        )  # fmt: skip
    if degraded_pgs:
        pct = 100 * objects / max(total_objects, 1)
        message = (f"Degraded data redundancy: {objects}/{total_objects} objects degraded "
                   f"({pct:.3f}%), {degraded_pgs} pgs degraded")  # fmt: skip
        if undersized:
            message += f", {degraded_pgs} pgs undersized"
        checks["PG_DEGRADED"] = _check(
            message, degraded_pgs, [f"pool '{p}' is undersized" for p in undersized]
        )
    recent = [c for c in ceph.crashes if now - c[2] < 14 * 86400]
    if recent:
        checks["RECENT_CRASH"] = _check(
            f"{len(recent)} daemons have recently crashed", len(recent),
            [f"{d} crashed on host {h} at {_stamp(t)}" for d, h, t in recent],
        )  # fmt: skip
    status = "HEALTH_WARN" if checks else "HEALTH_OK"
    return {"status": status, "checks": checks, "mutes": []}


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(at))


def _status(ctx: Context, params: Params) -> Result:
    """`ceph status` with `health detail` (Tools.pm `ceph_cluster_status`)."""
    if "node" in params:
        _node(ctx, params)
    ceph = _ceph(ctx)
    osds = ceph.osds.values()
    used = sum(o.used for o in osds if o.up)
    total = sum(OSD_BYTES for o in osds if o.up)
    pgs = sum(p.pg_num for p in ceph.pools.values())
    bad = sum(_pool_pgs(ceph, p)[0] for p in ceph.pools.values())
    by_state = [{"state_name": "active+clean", "count": pgs - bad}]
    if bad:
        by_state.append({"state_name": "active+undersized+degraded", "count": bad})
    return Result({
        "fsid": FSID,
        "health": health(ceph, ctx.now),
        "quorum": list(range(len(ceph.mons))),
        "quorum_names": list(ceph.mons),
        "monmap": {"mons": [_mon_map(ceph, name) for name in ceph.mons]},
        "mgrmap": {"available": bool(ceph.mgrs), "active_name": ceph.mgrs[0] if ceph.mgrs else "",
                   "standbys": [{"name": n} for n in ceph.mgrs[1:]]},
        "osdmap": {"num_osds": len(ceph.osds), "num_up_osds": sum(o.up for o in osds),
                   "num_in_osds": sum(o.inside for o in osds)},
        "pgmap": {"num_pgs": pgs, "num_pools": len(ceph.pools), "pgs_by_state": by_state,
                  "bytes_used": used, "bytes_avail": total - used, "bytes_total": total,
                  "data_bytes": sum(p.stored for p in ceph.pools.values())},
        "fsmap": {"up": len(ceph.mds), "in": len(ceph.mds),
                  "by_rank": [{"name": n, "status": "up:active", "filesystem_id": 1}
                              for n in list(ceph.mds)[:1]]},
    })  # fmt: skip


def _mon_map(ceph: Ceph, name: str) -> dict[str, Any]:
    rank = ceph.mons.index(name)
    return {"name": name, "rank": rank, "addr": f"10.10.10.{11 + rank}:6789/0"}


def _flags(ctx: Context, params: Params) -> Result:
    ceph = _ceph(ctx)
    return Result([{"name": f, "description": d, "value": f in ceph.flags}
                   for f, d in FLAGS.items()])  # fmt: skip


# --- daemons -------------------------------------------------------------------------


def _daemons(ctx: Context, params: Params, kind: str) -> Result:
    """MON.pm, MGR.pm, MDS.pm `index`: every daemon of the kind in the cluster."""
    _node(ctx, params)
    ceph = _ceph(ctx)
    if kind == "mon":
        return Result([{"name": n, "host": n, "rank": ceph.mons.index(n), "quorum": True,
                        "state": "running", "service": True, "direxists": True,
                        "addr": _mon_map(ceph, n)["addr"], "ceph_version": VERSION_LONG,
                        "ceph_version_short": VERSION} for n in ceph.mons])  # fmt: skip
    if kind == "mgr":
        return Result([{"name": n, "host": n, "state": "active" if i == 0 else "standby",
                        "service": True, "direxists": True, "ceph_version_short": VERSION}
                       for i, n in enumerate(ceph.mgrs)])  # fmt: skip
    fs_name = next(iter(ceph.fs), None)
    return Result([{"name": n, "host": h, "state": "up:active" if i == 0 else "up:standby",
                    "rank": 0 if i == 0 else None, "fs_name": fs_name if i == 0 else None,
                    "service": True, "direxists": True, "ceph_version_short": VERSION}
                   for i, (n, h) in enumerate(sorted(ceph.mds.items()))])  # fmt: skip


def _fs(ctx: Context, params: Params) -> Result:
    _node(ctx, params)
    ceph = _ceph(ctx)
    return Result([{"name": name, "metadata_pool": meta, "data_pool": data,
                    "metadata_pool_id": ceph.pools[meta].id, "data_pool_ids": [ceph.pools[data].id],
                    "data_pools": [data]}
                   for name, (meta, data) in sorted(ceph.fs.items())])  # fmt: skip


# --- OSDs ----------------------------------------------------------------------------


def _osd_tree(ctx: Context, params: Params) -> Result:
    """OSD.pm `index`: the CRUSH tree, root -> hosts -> OSDs, and the OSD map's flags."""
    _node(ctx, params)
    ceph = _ceph(ctx)
    hosts = []
    for position, host in enumerate(sorted({o.host for o in ceph.osds.values()})):
        children = [
            {"id": o.id, "name": f"osd.{o.id}", "type": "osd", "host": host, "leaf": 1,
             "status": "up" if o.up else "down", "in": int(o.inside), "crush_weight": 0.9099,
             "device_class": "ssd", "osdtype": "bluestore", "total_space": OSD_BYTES,
             "bytes_used": o.used if o.up else 0,
             "percent_used": round(100 * o.used / OSD_BYTES, 2) if o.up else 0,
             "version": VERSION}
            for o in sorted(ceph.osds.values(), key=lambda o: o.id) if o.host == host
        ]  # fmt: skip
        hosts.append({"id": -3 - 2 * position, "name": host, "type": "host",
                      "children": children, "version": VERSION})  # fmt: skip
    root = {"id": -1, "name": "default", "type": "root", "children": hosts}
    flags = ",".join(sorted({*ceph.flags, "sortbitwise", "recovery_deletes", "purged_snapdirs",
                             "pglog_hardlimit"}))  # fmt: skip
    return Result({"root": {"leaf": 0, "children": [root]}, "flags": flags})


def _osd(ctx: Context, params: Params) -> Osd:
    osdid = integer(params, "osdid")
    osd = _ceph(ctx).osds.get(osdid)
    if osd is None:
        raise failure(f"no such OSD '{osdid}'")
    return osd


def _set_in(inside: bool) -> Any:
    def handler(ctx: Context, params: Params) -> Result:
        """`ceph osd in|out osd.N`: synchronous, no task (OSD.pm)."""
        _node(ctx, params)
        _osd(ctx, params).inside = inside
        return Result(None)

    return handler


# --- pools ---------------------------------------------------------------------------


def _pool_row(ceph: Ceph, pool: Pool) -> dict[str, Any]:
    used = pool.stored * pool.size
    raw = sum(OSD_BYTES for o in ceph.osds.values() if o.up)
    return {"pool": pool.id, "pool_name": pool.name, "size": pool.size,
            "min_size": pool.min_size, "pg_num": pool.pg_num, "pg_autoscale_mode":
            pool.pg_autoscale_mode, "crush_rule": 0, "crush_rule_name": "replicated_rule",
            "type": "replicated", "bytes_used": used,
            "percent_used": round(used / max(raw, 1), 6),
            "application_metadata": {pool.application: {}}}  # fmt: skip


def _pools(ctx: Context, params: Params) -> Result:
    _node(ctx, params)
    ceph = _ceph(ctx)
    return Result([_pool_row(ceph, p) for p in sorted(ceph.pools.values(), key=lambda p: p.id)])


def _pool(ctx: Context, params: Params) -> Pool:
    name = text(params, "name")
    pool = _ceph(ctx).pools.get(name)
    if pool is None:
        # Ceph's `osd pool get` on an unknown pool (ENOENT); unsure of PVE's prefix.
        raise failure(f"unrecognized pool '{name}'")
    return pool


def _pool_index(ctx: Context, params: Params) -> Result:
    _node(ctx, params)
    _pool(ctx, params)
    return Result([{"name": "status"}])


def _pool_status(ctx: Context, params: Params) -> Result:
    _node(ctx, params)
    pool = _pool(ctx, params)
    return Result({"id": pool.id, "name": pool.name, "size": pool.size,
                   "min_size": pool.min_size, "pg_num": pool.pg_num, "pgp_num": pool.pg_num,
                   "pg_autoscale_mode": pool.pg_autoscale_mode, "application": pool.application,
                   "application_list": [pool.application], "crush_rule": "replicated_rule",
                   "fast_read": False, "hashpspool": True, "nodelete": False,
                   "nopgchange": False, "nosizechange": False, "noscrub": False,
                   "nodeep-scrub": False, "use_gmt_hitset": True,
                   "write_fadvise_dontneed": False})  # fmt: skip


def pool_storages(state: ClusterState, pool: str) -> list[Storage]:
    """The RBD storages on the pool (Pool.pm `$get_storages`; an rbd storage's pool
    defaults to `rbd`)."""
    return [s for s in state.storages if s.type == "rbd" and s.extra.get("pool", "rbd") == pool]


def _size_error(pool: Pool | None, params: Params) -> str | None:
    """Ceph's `osd pool set` refusal of a min_size above the size (the words through PVE
    unsure)."""
    size = integer(params, "size") if "size" in params else pool.size if pool else 3
    min_size = integer(params, "min_size") if "min_size" in params else pool.min_size if pool else 2
    if min_size > size:
        return f"pool min_size must be between 1 and size, which is {size}"
    return None


def _set_pool(pool: Pool, params: Params) -> None:
    """`PVE::Ceph::Tools::set_pool`: each option given, as `osd pool set`."""
    for key in ("size", "min_size", "pg_num"):
        if key in params:
            setattr(pool, key, integer(params, key))
    for key in ("application", "pg_autoscale_mode"):
        if key in params:
            setattr(pool, key, str(params[key]))


def _create_pool(ctx: Context, params: Params) -> Result:
    """Pool.pm `createpool`: PVE's defaults, then a `cephcreatepool` worker that creates
    the pool and then adds the storage, so a storage ID already taken fails the task with
    the pool made. Ceph's `osd pool create` on an existing name succeeds ("already
    exists") and PVE then sets the given options on that pool; the simulator does the
    same."""
    node = _node(ctx, params)
    ceph = _ceph(ctx)
    state = ctx.state
    name = text(params, "name")
    add_storage = bool(params.get("add_storages"))
    options: Params = {"size": 3, "min_size": 2, "pg_num": 128, "application": "rbd",
                       "pg_autoscale_mode": "warn", **params}  # fmt: skip

    def work(_: float) -> Plan:
        if (error := _size_error(None, options)) is not None:
            return Plan(TASK_SECONDS, error=error)
        exists = name in ceph.pools
        lines = ((0.1, f"pool '{name}' already exists"),) if exists else ()

        def create(_: float) -> None:
            pool = ceph.pools.get(name) or Pool(name, max(p.id for p in ceph.pools.values()) + 1)
            _set_pool(pool, options)
            ceph.pools[name] = pool

        storage_error = None
        if add_storage and any(s.name == name for s in state.storages):
            storage_error = f"adding PVE storage for ceph pool '{name}' failed: " + (
                f"storage ID '{name}' already defined"
            )

        def add(_: float) -> None:
            if add_storage:
                storage = Storage(name, "rbd", ("images", "rootdir"), shared=True,
                                  usage={n: (2 * TiB, 0) for n in state.nodes},
                                  extra={"pool": name, "krbd": 0})  # fmt: skip
                state.storages.append(storage)
                state.volumes.storages[name] = storage

        return Plan(TASK_SECONDS, error=storage_error, lines=lines, steps=((0.5, create),),
                    apply=add)  # fmt: skip

    task = state.start_task(node, "cephcreatepool", name, ctx.user, work,
                            locks=[("ceph-pool", name)])  # fmt: skip
    return Result(task.upid)


def _update_pool(ctx: Context, params: Params) -> Result:
    """Pool.pm `setpool`: a `cephsetpool` worker setting each option given."""
    node = _node(ctx, params)
    ceph = _ceph(ctx)
    name = text(params, "name")

    def work(_: float) -> Plan:
        pool = ceph.pools.get(name)
        if pool is None:
            return Plan(TASK_SECONDS, error=f"unrecognized pool '{name}'")
        if (error := _size_error(pool, params)) is not None:
            return Plan(TASK_SECONDS, error=error)
        return Plan(TASK_SECONDS, apply=lambda _: _set_pool(pool, params))

    task = ctx.state.start_task(node, "cephsetpool", name, ctx.user, work,
                                locks=[("ceph-pool", name)])  # fmt: skip
    return Result(task.upid)


def _delete_pool(ctx: Context, params: Params) -> Result:
    """Pool.pm `destroypool`: a `cephdestroypool` worker that, unless `force`, refuses a
    pool whose storages hold images; Ceph itself refuses a pool a CephFS uses (EBUSY)."""
    node = _node(ctx, params)
    ceph = _ceph(ctx)
    name = text(params, "name")
    force = bool(params.get("force"))
    remove_storages = bool(params.get("remove_storages"))
    state = ctx.state

    def work(_: float) -> Plan:
        storages = pool_storages(state, name)
        lines = []
        if not force:
            for storage in storages:
                lines.append((0.1, f"checking storage '{storage.name}' for RBD images.."))
                if any(state.volumes.on(storage, n) for n in storage.usage):
                    error = f"ceph pool '{name}' still in use by storage '{storage.name}'"
                    return Plan(TASK_SECONDS, lines=tuple(lines), error=error)
        if name not in ceph.pools:
            return Plan(TASK_SECONDS, lines=tuple(lines), error=f"unrecognized pool '{name}'")
        users = [fs for fs, pools in ceph.fs.items() if name in pools]
        if users:
            # Ceph's EBUSY refusal (mon `osd pool delete`); the prefix PVE adds is unsure.
            return Plan(TASK_SECONDS, lines=tuple(lines),
                        error=f"pool '{name}' is in use by CephFS")  # fmt: skip

        def apply(_: float) -> None:
            ceph.pools.pop(name, None)
            if remove_storages:
                for storage in storages:
                    state.storages.remove(storage)
                    state.volumes.storages.pop(storage.name, None)

        return Plan(TASK_SECONDS, lines=tuple(lines), apply=apply)

    task = state.start_task(node, "cephdestroypool", name, ctx.user, work,
                            locks=[("ceph-pool", name)])  # fmt: skip
    return Result(task.upid)


ROUTES: tuple[Route, ...] = (
    api("GET", "/cluster/ceph/status", _status),
    api("GET", "/cluster/ceph/flags", _flags),
    api("GET", "/nodes/{node}/ceph/status", _status),
    api("GET", "/nodes/{node}/ceph/mon", lambda c, p: _daemons(c, p, "mon")),
    api("GET", "/nodes/{node}/ceph/mgr", lambda c, p: _daemons(c, p, "mgr")),
    api("GET", "/nodes/{node}/ceph/mds", lambda c, p: _daemons(c, p, "mds")),
    api("GET", "/nodes/{node}/ceph/fs", _fs),
    api("GET", "/nodes/{node}/ceph/osd", _osd_tree),
    api("POST", "/nodes/{node}/ceph/osd/{osdid}/in", _set_in(True)),
    api("POST", "/nodes/{node}/ceph/osd/{osdid}/out", _set_in(False)),
    api("GET", "/nodes/{node}/ceph/pool", _pools),
    api("POST", "/nodes/{node}/ceph/pool", _create_pool),
    api("GET", "/nodes/{node}/ceph/pool/{name}", _pool_index),
    api("PUT", "/nodes/{node}/ceph/pool/{name}", _update_pool),
    api("DELETE", "/nodes/{node}/ceph/pool/{name}", _delete_pool),
    api("GET", "/nodes/{node}/ceph/pool/{name}/status", _pool_status),
)
