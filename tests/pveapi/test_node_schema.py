"""Each cluster's requests are checked against the schema its node serves
(`/pve-docs/api-viewer/apidoc.js`), fetched on the first call, cached per PVE version on
disk, and the shipped index when that fails; `proxmox_api_describe` says which answered.

End to end: the MCP SDK client, the gateway, and the simulator over HTTPS serving the
real PVE 9.2 apidoc (`../shared/pve-api/`, skipped when absent) or a broken one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import stat
import tracemalloc
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import structlog
from mcp import Client

from pvemcp.config import ClusterConfig, Settings
from pvemcp.gateway import context as context_module
from pvemcp.gateway.clusters import ClusterPool
from pvemcp.gateway.invoke import Gateway
from pvemcp.policy.audit import AuditLog
from pvemcp.proxmox.rest import RestBackend
from pvemcp.proxmox.tls import build_transport
from pvemcp.pveapi.index import load_index
from pvemcp.pveapi.node import (
    APIDOC_PATH,
    ApidocError,
    cache_file,
    node_index,
    parse_apidoc,
    write_cached,
)
from pvemcp.runtime import open_gateway
from pvemcp.secrets.redaction import Redactor
from pvemcp.simulator.apidoc import apidoc_body
from pvemcp.simulator.server import SimulatorHandle, SimulatorOptions, simulator_in_thread
from pvemcp.tools import catalogue
from pvemcp.transports.mcp_app import build_mcp_server
from pvemcp.transports.stdio import local_principal
from tests.conftest import TIME_SCALE, cluster_for, operator_policy
from tests.e2e.test_client_schema import RecordingBackend
from tests.pveschema import require_schema, schema_dir, schema_path
from tests.support.faultproxy import FaultProxy, Respond
from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def fresh_context_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warnings these tests count come from `gateway/context.py`'s module logger.
    structlog caches a logger on first use (`cache_logger_on_first_use`, as `pvemcp serve`
    configures it) with the processors of that moment, so after an earlier test ran the
    real logging set-up, `capture_logs` saw nothing here and the counts were 0. A fresh
    proxy binds inside the capture."""
    monkeypatch.setattr(context_module, "log", structlog.get_logger(context_module.__name__))


CONFIG = "/nodes/{node}/qemu/{vmid}/config"
VERSION = "9.2.0"
"""What the simulator's `GET /version` says."""


@contextmanager
def node(apidoc: Path | None) -> Iterator[SimulatorHandle]:
    """A simulator serving `apidoc` (None: a node without pve-docs)."""
    with simulator_in_thread(SimulatorOptions(time_scale=TIME_SCALE, apidoc=apidoc)) as sim:
        yield sim


@asynccontextmanager
async def gateway(tmp_path: Path, sim: SimulatorHandle, **cluster: Any) -> AsyncIterator[Session]:
    """A client on a fresh gateway over `sim` whose cluster fetches the node's schema into
    `tmp_path/cache` (unless `cluster` says otherwise); its API requests are recorded."""
    recorders: list[RecordingBackend] = []

    def factory(config: ClusterConfig) -> RecordingBackend:
        recorders.append(RecordingBackend(RestBackend(config)))
        return recorders[-1]

    settings: dict[str, Any] = {
        "api_schema_fetch": True,
        "api_schema_cache_dir": tmp_path / "cache",
        **cluster,
    }
    clusters = ClusterPool({"demo": cluster_for(sim, **settings)}, backend_factory=factory)
    gateway = Gateway(
        tools=catalogue(("api",)),
        clusters=clusters,
        policy=operator_policy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        redactor=Redactor((sim.token_secret,)),
    )
    try:
        async with Client(build_mcp_server(gateway, local_principal)) as client:
            yield Session(client, recorders, sim)
    finally:
        await gateway.aclose()


async def describe(session: Session, **arguments: Any) -> dict[str, Any]:
    return ok(await call(session, "proxmox_api_describe", **arguments))


def versions_read(session: Session) -> int:
    return sum(1 for method, path, _, _ in session.calls if (method, path) == ("GET", "/version"))


def fallbacks(events: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [event for event in events if event["event"] == "api_schema_fallback"]


async def test_the_node_schema_is_fetched_cached_and_read_back_after_a_restart(
    tmp_path: Path,
) -> None:
    require_schema()
    with node(schema_path()) as sim:
        async with gateway(tmp_path, sim) as session:
            shown = await describe(session, method="PUT", path=CONFIG, match="desc")
            assert shown["api_schema"] == f"node {VERSION}"
            assert shown["description"], "the node's schema has the method's own text"
            assert ";" in shown["params"]["description"], shown["params"]
            assert len(json.dumps(shown)) < 2000, "still a small answer"
            again = await describe(session, method="GET", path="/version")
            assert again["api_schema"] == f"node {VERSION}"
            assert versions_read(session) == 1, "resolved once per gateway"
    files = list((tmp_path / "cache").iterdir())
    expected = cache_file(tmp_path / "cache", VERSION, apidoc_body(schema_path()))
    assert files == [expected], "keyed by version and the apidoc's sha256"
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
    # A restart against the same version reads the cache: this node serves no apidoc at
    # all, so a fetch would have fallen back to the shipped schema.
    with node(None) as bare, structlog.testing.capture_logs() as events:
        async with gateway(tmp_path, bare) as session:
            shown = await describe(session, method="PUT", path=CONFIG, match="desc")
            assert shown["api_schema"] == f"node {VERSION}" and shown["description"]
            assert versions_read(session) == 1
    assert fallbacks(events) == []


async def test_requests_are_checked_against_the_schema_the_node_serves(tmp_path: Path) -> None:
    """A node serving 9.1's tree: a method 9.2 added (which the shipped index has) is
    refused as PVE 9.1 would, before anything but the schema's reads is sent."""
    require_schema()
    with node(schema_dir() / "pve-9.1-apidoc.json") as sim:
        async with gateway(tmp_path, sim) as session:
            error = refused(await call(session, "proxmox_api_read", path="/cluster/qemu/cpu-flags"))
            assert error["code"] == "invalid_argument" and error["field"] == "path", error
            assert "no API path" in error["message"], error
            assert session.calls == [("GET", "/version", {}, session.calls[0][3])]
            assert ok(await call(session, "proxmox_api_read", path="/version"))["data"]
        async with gateway(tmp_path / "off", sim, api_schema_fetch=False) as session:
            shown = await describe(session, method="GET", path="/cluster/qemu/cpu-flags")
            assert shown["api_schema"] == "shipped 9.2", "the shipped 9.2 index has it"


async def test_another_version_or_a_broken_cache_file_is_fetched_again(tmp_path: Path) -> None:
    require_schema()
    cache = tmp_path / "cache"
    older = apidoc_body(schema_dir() / "pve-9.1-apidoc.json")
    write_cached(cache_file(cache, "9.1.5", older), node_index(older, "9.1.5")[1])
    broken = {
        f"pve-{VERSION}-notgzip.index.json.gz": b"not gzip",
        f"pve-{VERSION}-nopaths.index.json.gz": gzip.compress(b'{"format": 1, "pve": "9.2.0"}'),
        f"pve-{VERSION}-list.index.json.gz": gzip.compress(b"[1, 2]"),
    }
    for name, content in broken.items():
        write_cached(cache / name, content)
    with node(schema_path()) as sim:
        async with gateway(tmp_path, sim) as session:
            shown = await describe(session, method="PUT", path=CONFIG)
    assert shown["api_schema"] == f"node {VERSION}"
    fetched = cache_file(cache, VERSION, apidoc_body(schema_path()))
    assert fetched.is_file(), "fetched for 9.2.0: neither the 9.1.5 file nor a broken one"
    assert len(list(cache.iterdir())) == 2 + len(broken), "the others are left alone"


@pytest.mark.parametrize(
    ("served", "settings", "reason"),
    [
        ("real", {"api_schema_max_bytes": 64 * 1024}, "over the cap of 65536"),
        ("real", {"api_schema_timeout": 0.001}, "no complete answer within api_schema_timeout"),
        ("garbage", {}, "apiSchema is not JSON"),
        (None, {}, "HTTP 500"),
    ],
    ids=["oversized", "slow", "garbage", "no-pve-docs"],
)
async def test_a_schema_that_cannot_be_used_falls_back_to_the_shipped_one(
    tmp_path: Path, served: str | None, settings: dict[str, Any], reason: str
) -> None:
    apidoc: Path | None = None
    if served == "real":
        require_schema()
        apidoc = schema_path()
    elif served == "garbage":
        apidoc = tmp_path / "garbage.json"
        apidoc.write_text('[{"path": "/nodes", "info": ')
    with node(apidoc) as sim, structlog.testing.capture_logs() as events:
        async with gateway(tmp_path, sim, **settings) as session:
            shown = await describe(session, method="PUT", path=CONFIG, match="desc")
            assert shown["api_schema"] == "shipped 9.2"
            assert "description" not in shown, "the shipped index has no Proxmox text"
            # The generic call is still checked, against the shipped schema.
            error = refused(
                await call(session, "proxmox_api_read", path="/nodes/pve1/qemu/100/confg")
            )
            assert error["code"] == "invalid_argument"
    warned = fallbacks(events)
    assert len(warned) == 1, "one warning, however many calls"
    assert reason in warned[0]["reason"] and warned[0]["using"] == "shipped 9.2", warned
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


async def test_concurrent_first_calls_resolve_the_schema_once(tmp_path: Path) -> None:
    require_schema()
    with node(schema_path()) as sim:
        async with gateway(tmp_path, sim) as session:
            answers: list[dict[str, Any]] = []

            async def ask() -> None:
                answers.append(await describe(session, method="GET", path="/version"))

            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(ask)
            assert [answer["api_schema"] for answer in answers] == [f"node {VERSION}"] * 3
            assert versions_read(session) == 1, "the others waited for the first"


async def test_the_simulator_serves_apidoc_js_without_a_login_as_pveproxy_does() -> None:
    require_schema()
    for served in (schema_path(), None):
        with node(served) as sim:
            transport = build_transport(cluster_for(sim), limits=httpx2.Limits())
            async with httpx2.AsyncClient(transport=transport, base_url=sim.url) as client:
                answer = await client.get(APIDOC_PATH)
        if served is None:
            # pve-http-server's answer for a file under a directory that does not exist.
            assert (answer.status_code, answer.reason_phrase) == (
                500,
                f"no such file '{APIDOC_PATH}'",
            )
        else:
            assert answer.status_code == 200, answer
            assert answer.headers["content-type"].startswith("application/javascript")
            assert answer.content.startswith(b"const apiSchema = [")
            assert len(parse_apidoc(answer.content)) == len(json.loads(served.read_bytes()))


async def test_a_configured_file_wins_and_fetching_can_be_turned_off(tmp_path: Path) -> None:
    require_schema()
    with node(schema_path()) as sim:
        older = schema_dir() / "pve-9.1-apidoc.json"
        async with gateway(tmp_path, sim, api_schema=older) as session:
            assert (await describe(session, method="GET", path="/version"))["api_schema"] == "file"
            assert versions_read(session) == 0
        async with gateway(tmp_path, sim, api_schema_fetch=False) as session:
            shown = await describe(session, method="GET", path="/version")
            assert shown["api_schema"] == "shipped 9.2"
            assert versions_read(session) == 0
    assert not (tmp_path / "cache").exists()


def test_the_schema_array_is_read_out_of_the_script_never_run() -> None:
    viewer = b"\n\nlet method2cmd = { GET: 'get' };\nconst x = [1];\n"
    tree = [{"path": "/version", "text": "version", "info": {}}]
    assert parse_apidoc(b"const apiSchema = " + json.dumps(tree).encode() + b";" + viewer) == tree
    bad = {
        b"let schema = [];": "no 'const apiSchema",
        b"const apiSchema = [1, 2];": "not a list of API paths",
        b"const apiSchema = [];": "not a list of API paths",
        b'const apiSchema = [{"path": "/x"}] + alert(1);': "not followed by ';'",
        b'const apiSchema = [{"path": "/x"}': "not JSON",
        b"const apiSchema = \xff;": "not UTF-8",
    }
    for raw, said in bad.items():
        with pytest.raises(ApidocError, match=said):
            parse_apidoc(raw)


def test_a_cache_file_holds_the_index_with_descriptions_and_no_viewer_code() -> None:
    require_schema()
    raw = apidoc_body(schema_path())
    index, encoded = node_index(raw, VERSION)
    assert index.source == f"node {VERSION}" and len(index) == 675
    data = json.loads(gzip.decompress(encoded))
    assert data["pve"] == VERSION
    assert hashlib.sha256(raw).hexdigest() in cache_file(Path("/c"), VERSION, raw).name
    endpoint = index.endpoint("PUT", CONFIG)
    assert endpoint is not None and endpoint.description
    create = index.endpoint("POST", "/nodes/{node}/qemu")
    assert create is not None and create.upid, "UPID methods marked as in the shipped index"


async def test_the_demo_uses_the_shipped_schema_without_asking_or_warning(tmp_path: Path) -> None:
    """`pvemcp demo`'s embedded simulator serves no pve-docs: asking it would only end in
    the fallback warning at every newcomer's first generic call (it did before)."""
    settings = Settings(tools={"toolsets": ["api"]}, audit={"path": tmp_path / "audit.jsonl"})
    with structlog.testing.capture_logs() as events:
        async with (
            open_gateway(settings, Redactor(), simulate=True) as demo,
            Client(build_mcp_server(demo, local_principal)) as client,
        ):
            result = await client.call_tool(
                "proxmox_api_describe", {"method": "PUT", "path": CONFIG}
            )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert result.structured_content["api_schema"] == "shipped 9.2"
    assert fallbacks(events) == []


def _doctored_apidoc(tmp_path: Path, how: str) -> Path:
    """PVE 9.2's tree doctored as a compromised node, or one on the path of
    `tls = insecure`, could serve it: `hidden`, `/nodes/{node}/termproxy` behind a variable
    segment (`/nodes/{node}/{x}`), so the console proxy looks like any POST; `shadowed`, a
    literal `/access/users/root@pam/token/agent` beside the `{userid}/token/{tokenid}` that
    answers a token secret, so that call looks like any POST."""
    tree = json.loads(schema_path().read_bytes())
    if how == "hidden":
        nodes = next(n for n in tree if n["path"] == "/nodes")
        member = next(n for n in nodes["children"] if n["path"] == "/nodes/{node}")
        proxy = next(n for n in member["children"] if n["path"] == "/nodes/{node}/termproxy")
        proxy["path"], proxy["text"] = "/nodes/{node}/{x}", "{x}"
        proxy["info"]["POST"]["parameters"]["properties"]["x"] = {"type": "string"}
    else:
        access = next(n for n in tree if n["path"] == "/access")
        users = next(n for n in access["children"] if n["path"] == "/access/users")
        token = {"path": "/access/users/root@pam/token/agent", "text": "agent", "leaf": 1}
        token["info"] = {"POST": {"method": "POST", "name": "t", "parameters": {}}}
        listing = {"path": "/access/users/root@pam/token", "text": "token", "leaf": 0}
        listing["children"] = [token]
        users["children"].append(
            {"path": "/access/users/root@pam", "text": "root@pam", "leaf": 0,
             "children": [listing]}
        )  # fmt: skip
    doctored = tmp_path / f"{how}-apidoc.json"
    doctored.write_text(json.dumps(tree))
    return doctored


@pytest.mark.parametrize(
    ("how", "path", "answers", "named"),
    [
        ("hidden", "/nodes/pve1/termproxy", "console ticket", "/nodes/{node}/termproxy"),
        (
            "shadowed",
            "/access/users/root@pam/token/agent",
            "token secret",
            "/access/users/{userid}/token/{tokenid}",
        ),
    ],
)
async def test_a_node_schema_cannot_move_an_endpoint_the_shipped_index_knows(
    tmp_path: Path, how: str, path: str, answers: str, named: str
) -> None:
    """The tier tables, the credential refusals and the typed tools' floors are keyed by the
    shipped templates, and what is sent is rebuilt from the matched template: a node schema
    that matches a known path to another template, or shadows one with a literal, is not
    used (the shipped one is, with a warning), so a credential is still refused through
    the generic call."""
    require_schema()
    with (
        node(_doctored_apidoc(tmp_path, how)) as sim,
        structlog.testing.capture_logs() as events,
    ):
        async with gateway(tmp_path, sim) as session:
            error = refused(await call(session, "proxmox_api_call", method="POST", path=path))
            assert error["code"] == "unsupported" and answers in error["message"], error
            assert [c[:2] for c in session.calls] == [("GET", "/version")], "nothing else sent"
    warned = fallbacks(events)
    assert len(warned) == 1 and named in warned[0]["reason"], warned
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


async def test_a_compressed_apidoc_is_capped_on_its_decoded_bytes_as_it_streams(
    tmp_path: Path,
) -> None:
    """A node (or a proxy in front of it) that answers gzip although asked for identity:
    50 MB of zeros compress to ~50 KB, well under the cap, so only the decoded bytes can
    be held to it. The gateway stops reading a piece past the cap and falls back, and
    the memory traced meanwhile stays within the cap plus a few MB (the bomb decoded
    whole would be 50 MB)."""
    bomb = gzip.compress(bytes(50 * 1024 * 1024), compresslevel=9)
    cap = 256 * 1024
    with node(None) as sim, structlog.testing.capture_logs() as events:
        async with FaultProxy(sim.url, sim.cert_pem) as proxy:
            proxy.inject(
                "GET",
                re.escape(APIDOC_PATH),
                Respond(200, bomb, "application/javascript", (("Content-Encoding", "gzip"),)),
            )
            cluster = {"api_url": proxy.url, "fingerprint": proxy.fingerprint}
            async with gateway(tmp_path, sim, api_schema_max_bytes=cap, **cluster) as session:
                load_index()  # the fallback's, cached: not part of what is measured
                tracemalloc.start()
                try:
                    shown = await describe(session, method="GET", path="/version")
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
            assert ("GET", APIDOC_PATH) in proxy.seen
    assert shown["api_schema"] == "shipped 9.2"
    warned = fallbacks(events)
    assert len(warned) == 1 and f"over the cap of {cap}" in warned[0]["reason"], warned
    assert peak < cap + 4 * 1024 * 1024, f"peak {peak} bytes traced while fetching a gzip bomb"
