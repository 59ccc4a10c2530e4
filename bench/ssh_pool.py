"""SSH pooling benchmark: `pvesh get /version` over one pooled connection vs one per call.

Run as root (it starts its own sshd on 127.0.0.1, like the SSH tests):
`.venv/bin/python bench/ssh_pool.py` (add `--calls N`; default 100). Everything runs in
one process against the embedded simulator; the `pvesh` stand-in (a Python script) plays
pvesh on the "node". Figures go to stdout:

- `pvesh get /version`: N sequential calls through `PveshBackend` on one `SshPool`, then N
  calls each with a fresh pool (handshake, key exchange and login every time);
- `true`: the same for a command that costs nearly nothing on the node, which isolates what
  the pool saves from what the remote program costs.

The ratio is pooled / new-connection time (target <= 0.25).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from pydantic import SecretStr

from pvemcp.config import ClusterConfig, SshConfig, TlsMode
from pvemcp.logsetup import configure_logging
from pvemcp.proxmox.pvesh import PveshBackend
from pvemcp.proxmox.ssh import SshPool
from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.types import SshCredentials
from pvemcp.simulator.server import SimulatorOptions, simulator_in_thread

NODE = "pve1"


async def timed(calls: int, one: Callable[[], Awaitable[object]]) -> float:
    await one()  # warm-up: imports, first connection of the pooled case
    started = time.perf_counter()
    for _ in range(calls):
        await one()
    return time.perf_counter() - started


def report(label: str, calls: int, pooled: float, fresh: float) -> None:
    print(
        f"{label:<22} pooled {pooled * 1000 / calls:7.2f} ms/call ({pooled:6.2f} s)   "
        f"new connection {fresh * 1000 / calls:7.2f} ms/call ({fresh:6.2f} s)   "
        f"ratio {pooled / fresh:.3f}"
    )


async def run(calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.sshd import running_sshd, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"cannot run: {reason}")
    with (
        simulator_in_thread(SimulatorOptions(time_scale=0)) as sim,
        running_sshd(simulator=sim) as sshd,
    ):
        ssh = SshConfig(nodes={NODE: f"127.0.0.1:{sshd.port}"}, backend="pvesh")
        cluster = ClusterConfig(
            api_url=sim.url,
            token_id=sim.token_id,
            token_secret=SecretStr(sim.token_secret),
            tls=TlsMode.FINGERPRINT,
            fingerprint=sim.fingerprint,
            default_node=NODE,
            ssh=ssh,
        )
        login = SshCredentials(
            user=sshd.user, key_path=sshd.keys.plain, host_keys={NODE: (sshd.host_key_line,)}
        )
        pool = SshPool("bench", ssh, lambda: login)
        backend = PveshBackend(cluster, pool)

        async def fresh_pvesh() -> None:
            own = SshPool("bench", ssh, lambda: login)
            try:
                await PveshBackend(cluster, own).call("GET", "/version")
            finally:
                await own.aclose()

        async def fresh_true() -> None:
            own = SshPool("bench", ssh, lambda: login)
            try:
                await own.run(NODE, ["true"])
            finally:
                await own.aclose()

        print(f"{calls} sequential calls each, sshd on 127.0.0.1:{sshd.port}, ed25519 keys")
        pooled = await timed(calls, lambda: backend.call("GET", "/version"))
        fresh = await timed(calls, fresh_pvesh)
        report("pvesh get /version", calls, pooled, fresh)
        pooled = await timed(calls, lambda: pool.run(NODE, ["true"]))
        fresh = await timed(calls, fresh_true)
        report("true (SSH cost only)", calls, pooled, fresh)
        await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    configure_logging("WARNING", Redactor())
    anyio.run(run, args.calls)


if __name__ == "__main__":
    main()
