"""A stateful Proxmox VE API simulator.

A separate program that happens to ship in the package: it imports nothing else of
`pvemcp`, so it can never share a bug with the client it is used to test.
"""

from .server import (
    SimulatorHandle,
    SimulatorOptions,
    main,
    serve_simulator,
    simulator_in_thread,
)
from .state import ClusterState

__all__ = [
    "ClusterState",
    "SimulatorHandle",
    "SimulatorOptions",
    "main",
    "serve_simulator",
    "simulator_in_thread",
]
