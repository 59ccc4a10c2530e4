"""The added cost per call of policy and audit: what the gateway spends deciding and recording.

Run: `.venv/bin/python bench/policy_audit.py` (add `--quick` for fewer iterations).

- decide: `PolicyEngine.decide` with the operator profile plus a 20-rule policy file.
- read: decide + the single audit record of a read (not fsync'd).
- risky: decide + the fsync'd intent record + the outcome record, as a write call pays.
The audit log lives in a temporary directory on the same disk as the checkout's /tmp.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from pvemcp.policy.audit import AuditLog, new_event_id
from pvemcp.policy.engine import PolicyEngine, PolicyRequest
from pvemcp.policy.loader import load_policy
from pvemcp.policy.principal import Principal
from pvemcp.policy.tiers import Tier
from pvemcp.tools import tier_map

RULES = (
    "\n".join(
        f'[[rules]]\nid = "team-{i}"\neffect = "allow"\nsubjects = ["group:team{i}"]\n'
        f'tools = ["proxmox_guest_power"]\ntags = ["team{i}"]\n'
        for i in range(19)
    )
    + '[[rules]]\nid = "no-prod"\neffect = "deny"\nsubjects = ["*"]\npools = ["prod"]\n'
)

LOCAL = Principal.local("stdio")
ARGS = {"vmid": 101, "action": "start", "wait": True}


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {p50 * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us"


def timed(fn: Callable[[], object], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


async def main(quick: bool) -> None:
    iterations = 300 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        policy_file = Path(tmp) / "policy.toml"
        policy_file.write_text(RULES)
        engine: PolicyEngine = load_policy(
            profile="operator", profile_subjects=["local"], file=policy_file, known_tools=tier_map()
        )
        audit = AuditLog(Path(tmp) / "audit.jsonl", checkpoint_every=1000, hmac_key=b"k" * 32)
        read_request = PolicyRequest(tool="proxmox_guest_list", tier=Tier.READ, cluster="demo")
        write_request = PolicyRequest(
            tool="proxmox_guest_power",
            tier=Tier.WRITE,
            cluster="demo",
            arguments=ARGS,
            node="pve1",
            vmid=101,
            pool="dev",
            tags=frozenset({"team3"}),
        )

        def decide_read() -> None:
            engine.decide(LOCAL, read_request)

        def read_call() -> None:
            decision = engine.decide(LOCAL, read_request)
            audit.outcome(
                new_event_id(),
                LOCAL,
                tool="proxmox_guest_list",
                tier="read",
                cluster="demo",
                arguments={},
                decision=decision,
                status="ok",
                duration_ms=1.0,
                phase="record",
                raw_arguments={},
            )

        risky: list[float] = []
        for _ in range(iterations // 3):
            started = time.perf_counter()
            decision = engine.decide(LOCAL, write_request)
            event = new_event_id()
            await audit.intent(
                event,
                LOCAL,
                tool="proxmox_guest_power",
                tier="write",
                cluster="demo",
                arguments=ARGS,
                decision=decision,
                backend="rest",
                raw_arguments=ARGS,
                node="pve1",
                vmid=101,
            )
            audit.outcome(
                event,
                LOCAL,
                tool="proxmox_guest_power",
                tier="write",
                cluster="demo",
                arguments=None,
                decision=None,
                status="ok",
                duration_ms=1.0,
                upids=["UPID:pve1:00001234:00005678:65000000:qmstart:101:root@pam:"],
            )
            risky.append(time.perf_counter() - started)
        decide = timed(decide_read, iterations)
        reads = timed(read_call, iterations)
        audit.close()
    print(f"policy decide (read, 20-rule file):        {percentiles(decide)}")
    print(f"read call: decide + audit record:          {percentiles(reads)}")
    print(f"risky call: decide + fsync'd intent + outcome: {percentiles(risky)}")
    print(f"    {iterations} reads, {iterations // 3} risky calls, one process, same disk")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    anyio.run(main, parser.parse_args().quick)
