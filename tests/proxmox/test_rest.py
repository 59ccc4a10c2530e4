"""The REST backend against a real HTTPS server: wire format, errors, retries and TLS."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx2
import pytest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pvemcp.config import ClusterConfig, ConfigError, TlsMode
from pvemcp.proxmox.errors import (
    AuthenticationError,
    MalformedAnswer,
    NotFound,
    NotImplementedOnServer,
    ParameterError,
    PermissionDenied,
    ProxmoxError,
    ProxmoxTimeout,
    ProxmoxUnreachable,
    ServerError,
    TlsVerificationError,
)
from pvemcp.proxmox.rest import RestBackend
from pvemcp.simulator.certs import make_self_signed

from .fake_pve import SECRET, TOKEN_ID, FakePve, bound_socket, pve_json

pytestmark = pytest.mark.anyio

MakeCluster = Callable[..., ClusterConfig]
UPID = "UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100:pvemcp@pve!gateway:"


async def test_get_sends_token_and_query(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/cluster/tasks", pve_json([{"upid": UPID}], total=7))
    async with RestBackend(make_cluster()) as backend:
        result = await backend.call(
            "GET", "/cluster/tasks", {"limit": 5, "errors": True, "vmid": None, "x": ["a b", 2]}
        )
    assert result.data == [{"upid": UPID}]
    assert result.total == 7
    (seen,) = pve.requests
    assert seen.headers["authorization"] == f"PVEAPIToken={TOKEN_ID}={SECRET}"
    assert seen.query == "limit=5&errors=1&x=a%20b&x=2"
    assert seen.body == b""
    assert "content-type" not in seen.headers


async def test_post_sends_form_body(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("POST", "/nodes/pve1/qemu/100/status/start", pve_json(UPID))
    async with RestBackend(make_cluster()) as backend:
        result = await backend.call(
            "POST", "/nodes/pve1/qemu/100/status/start", {"skiplock": False, "timeout": 30}
        )
    assert result.data == UPID
    assert result.total is None
    (seen,) = pve.requests
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.body == b"skiplock=0&timeout=30"
    assert seen.query == ""


async def test_null_data_and_put_delete(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("PUT", "/nodes/pve1/qemu/100/config", pve_json(None))
    pve.route("DELETE", "/pools/dev", pve_json(None))
    async with RestBackend(make_cluster()) as backend:
        assert (await backend.call("PUT", "/nodes/pve1/qemu/100/config", {"cores": 2})).data is None
        assert (await backend.call("DELETE", "/pools/dev", {"force": 1})).data is None
    put, delete = pve.requests
    assert put.body == b"cores=2"
    assert (delete.query, delete.body) == ("force=1", b"")


async def test_path_segments_reach_the_server_encoded(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    status_path = f"/nodes/pve1/tasks/{UPID}/status"
    pve.route("GET", status_path, pve_json({"status": "running"}))
    pve.route("DELETE", "/nodes/pve1/storage/local/content/local:iso/a b.iso", pve_json(None))
    async with RestBackend(make_cluster()) as backend:
        await backend.call("GET", status_path)
        await backend.call("DELETE", "/nodes/pve1/storage/local/content/local:iso%2Fa b.iso")
    first, second = pve.requests
    assert first.raw_path == f"/api2/json{status_path}"
    assert second.raw_path == "/api2/json/nodes/pve1/storage/local/content/local:iso%2Fa%20b.iso"


async def test_connection_is_reused(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    async with RestBackend(make_cluster()) as backend:
        for _ in range(3):
            await backend.call("GET", "/version")
    ports = {seen.client_port for seen in pve.requests}
    assert len(pve.requests) == 3
    assert len(ports) == 1


@pytest.mark.parametrize(
    "path", ["/nodes/../access", "/nodes/%2e%2e/access", "/nodes//pve1", "/version?x=1"]
)
async def test_bad_paths_are_refused_before_sending(
    pve: FakePve, make_cluster: MakeCluster, path: str
) -> None:
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(ParameterError) as info:
            await backend.call("GET", path)
    assert info.value.errors.keys() == {"path"}
    assert (info.value.method, info.value.path) == ("GET", path)
    assert pve.requests == []


async def test_bad_parameter_value_is_refused(pve: FakePve, make_cluster: MakeCluster) -> None:
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(ParameterError, match="NUL"):
            await backend.call("POST", "/pools", {"poolid": "a\x00"})
        with pytest.raises(ParameterError, match="GET, POST"):
            await backend.call("PATCH", "/pools")  # type: ignore[arg-type]
    assert pve.requests == []


StatusCase = tuple[Response, type[ProxmoxError], str, dict[str, str]]


@pytest.mark.parametrize(
    "case",
    [
        (
            pve_json(
                status=400,
                message="Parameter verification failed.\n",
                errors={"vmid": "type check ('integer') failed - got 'x'\n"},
            ),
            ParameterError,
            "Parameter verification failed.",
            {"vmid": "type check ('integer') failed - got 'x'"},
        ),
        (Response(status_code=401), AuthenticationError, "Unauthorized", {}),
        (
            pve_json(status=403, message="Permission check failed (/vms/100, VM.PowerMgmt)\n"),
            PermissionDenied,
            "Permission check failed (/vms/100, VM.PowerMgmt)",
            {},
        ),
        (pve_json(status=404, message="no such resource"), NotFound, "no such resource", {}),
        (
            pve_json(
                status=500,
                message="Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n",
            ),
            NotFound,
            "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist",
            {},
        ),
        (
            pve_json(status=500, message="VM 100 is locked (backup)\n"),
            ServerError,
            "VM 100 is locked (backup)",
            {},
        ),
        (
            pve_json(status=501, message="Method 'POST /nodes/pve1/lxc/100/exec' not implemented"),
            NotImplementedOnServer,
            "Method 'POST /nodes/pve1/lxc/100/exec' not implemented",
            {},
        ),
        (pve_json(status=500), ServerError, "Internal Server Error", {}),
        (PlainTextResponse("oops", status_code=502), ServerError, "Bad Gateway", {}),
        (
            pve_json(status=400, message="storage 'nope' does not exist"),
            NotFound,
            "storage 'nope' does not exist",
            {},
        ),
    ],
)
async def test_status_mapping(pve: FakePve, make_cluster: MakeCluster, case: StatusCase) -> None:
    response, error, message, errors = case
    pve.route("POST", "/nodes/pve1/qemu/100/status/start", response)
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(ProxmoxError) as info:
            await backend.call("POST", "/nodes/pve1/qemu/100/status/start")
    exc = info.value
    assert type(exc) is error
    assert message in exc.message
    assert exc.errors == errors
    assert exc.status == response.status_code
    assert (exc.method, exc.path) == ("POST", "/nodes/pve1/qemu/100/status/start")
    assert len(pve.requests) == 1


async def test_authentication_error_names_the_token(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", "/version", Response(status_code=401))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(AuthenticationError, match="pvemcp@pve!gateway"):
            await backend.call("GET", "/version")


@pytest.mark.parametrize(
    "response",
    [
        PlainTextResponse("<html>proxy error</html>"),
        Response(b"[1, 2]", media_type="application/json"),
        Response(b"\xff\xfe", media_type="application/json"),
        Response(b""),
        Response(b'{"message": "no data member"}', media_type="application/json"),
    ],
)
async def test_success_without_json_object_is_a_malformed_answer(
    pve: FakePve, make_cluster: MakeCluster, response: Response
) -> None:
    pve.route("GET", "/version", response)
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(MalformedAnswer, match=r"not a JSON object|no `data` member") as info:
            await backend.call("GET", "/version")
    assert info.value.status == 200
    assert info.value.code == "bad_upstream_answer"
    assert "may have run" not in info.value.message


async def test_malformed_answer_to_a_post_says_it_may_have_run(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    """Before: a POST whose answer was HTML was `proxmox_refused` ("fix the cause, then
    retry"), though the action had reached the node."""
    pve.route("POST", "/nodes/pve1/qemu/100/status/start", PlainTextResponse("<html>ok</html>"))
    async with RestBackend(make_cluster()) as backend:
        with pytest.raises(MalformedAnswer, match="may have run") as info:
            await backend.call("POST", "/nodes/pve1/qemu/100/status/start")
    assert "before retrying" in info.value.hint


async def test_read_timeout_is_not_retried(pve: FakePve, make_cluster: MakeCluster) -> None:
    async def slow(_: Request) -> Response:
        await anyio.sleep(1.5)
        return pve_json({"version": "9.2"})

    pve.route("GET", "/version", slow)
    async with RestBackend(make_cluster(read_timeout=0.3)) as backend:
        started = time.monotonic()
        with pytest.raises(ProxmoxTimeout, match="read_timeout") as info:
            await backend.call("GET", "/version")
    assert time.monotonic() - started < 1.2
    assert (info.value.method, info.value.path) == ("GET", "/version")
    assert len(pve.requests) == 1


async def test_post_read_timeout_warns_it_may_take_effect(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    async def slow(_: Request) -> Response:
        await anyio.sleep(1.5)
        return pve_json(UPID)

    pve.route("POST", "/nodes/pve1/qemu/100/status/stop", slow)
    async with RestBackend(make_cluster(read_timeout=0.3)) as backend:
        with pytest.raises(ProxmoxTimeout, match="may still take effect"):
            await backend.call("POST", "/nodes/pve1/qemu/100/status/stop")
    assert len(pve.requests) == 1


def _closed_port() -> int:
    sock = bound_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_get_is_retried_then_unreachable(make_cluster: MakeCluster) -> None:
    port = _closed_port()
    cluster = make_cluster(api_url=f"https://127.0.0.1:{port}", retries=2)
    async with RestBackend(cluster) as backend:
        started = time.monotonic()
        with pytest.raises(ProxmoxUnreachable) as info:
            await backend.call("GET", "/version")
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in info.value.message
    assert "after 3 attempts" in info.value.message
    assert (info.value.method, info.value.path) == ("GET", "/version")


class CountingTransport(httpx2.AsyncBaseTransport):
    """Counts attempts; calls `after_first_failure` once the first attempt failed."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, after_first_failure: Callable[[], None]
    ) -> None:
        self.inner = inner
        self.attempts = 0
        self._after_first_failure = after_first_failure

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        try:
            return await self.inner.handle_async_request(request)
        except httpx2.ConnectError:
            if self.attempts == 1:
                await anyio.to_thread.run_sync(self._after_first_failure)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(("method", "attempts"), [("GET", 2), ("POST", 1)])
async def test_only_get_retries_when_the_server_comes_up(
    tmp_path: Path, method: str, attempts: int
) -> None:
    """The port refuses the first attempt; a server then starts listening on it."""
    certs = make_self_signed()
    late = FakePve(certs, tmp_path)
    late.route(method, "/version", pve_json({"version": "9.2"}))
    sock = bound_socket()
    late.port = sock.getsockname()[1]
    cluster = ClusterConfig(
        api_url=late.url,
        token_id=TOKEN_ID,
        token_secret=SecretStr(SECRET),
        tls=TlsMode.FINGERPRINT,
        fingerprint=certs.fingerprint,
        retries=3,
    )
    inner = httpx2.AsyncHTTPTransport(verify=False)
    counting = CountingTransport(inner, lambda: late.start(sock))
    try:
        async with RestBackend(cluster, transport=counting) as backend:
            if method == "GET":
                assert (await backend.call("GET", "/version")).data == {"version": "9.2"}
            else:
                with pytest.raises(ProxmoxUnreachable):
                    await backend.call("POST", "/version")
    finally:
        late.stop()
        sock.close()
    assert counting.attempts == attempts


async def test_fingerprint_pin_matches(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    for fingerprint in (pve.certs.fingerprint, pve.certs.fingerprint_colons):
        async with RestBackend(make_cluster(fingerprint=fingerprint)) as backend:
            assert (await backend.call("GET", "/version")).data == {"version": "9.2"}
    assert len(pve.requests) == 2


async def test_fingerprint_mismatch_sends_nothing(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    wrong = "AB:" * 31 + "CD"
    async with RestBackend(make_cluster(fingerprint=wrong, retries=3)) as backend:
        with pytest.raises(TlsVerificationError) as info:
            await backend.call("GET", "/version")
    message = info.value.message
    assert pve.certs.fingerprint_colons in message
    assert wrong in message
    assert "fingerprint =" in message
    assert (info.value.method, info.value.path) == ("GET", "/version")
    # The pin is checked during the handshake: no request, so no Authorization header.
    assert pve.requests == []
    assert not any("authorization" in seen.headers for seen in pve.requests)


async def test_system_trust_refuses_self_signed(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    async with RestBackend(make_cluster(tls=TlsMode.SYSTEM, fingerprint=None)) as backend:
        with pytest.raises(TlsVerificationError, match="certificate") as info:
            await backend.call("GET", "/version")
    assert "tls = 'system'" in info.value.message
    assert pve.requests == []


async def test_ca_file_trusts_the_certificate(
    pve: FakePve, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    ca_file = tmp_path / "pve-root-ca.pem"
    ca_file.write_bytes(pve.certs.cert_pem)
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    cluster = make_cluster(tls=TlsMode.CA_FILE, ca_file=ca_file, fingerprint=None)
    async with RestBackend(cluster) as backend:
        assert (await backend.call("GET", "/version")).data == {"version": "9.2"}


async def test_ca_file_with_another_ca_is_refused(
    pve: FakePve, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    ca_file = tmp_path / "other-ca.pem"
    ca_file.write_bytes(make_self_signed().cert_pem)
    cluster = make_cluster(tls=TlsMode.CA_FILE, ca_file=ca_file, fingerprint=None)
    async with RestBackend(cluster) as backend:
        with pytest.raises(TlsVerificationError):
            await backend.call("GET", "/version")
    assert pve.requests == []


@pytest.mark.parametrize(
    ("content", "complaint"), [(None, "does not exist"), (b"not a certificate\n", "no usable")]
)
def test_unusable_ca_file_is_a_config_error(
    make_cluster: MakeCluster, tmp_path: Path, content: bytes | None, complaint: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_bytes(content)
    with pytest.raises(ConfigError, match=complaint):
        RestBackend(make_cluster(tls=TlsMode.CA_FILE, ca_file=ca_file, fingerprint=None))


async def test_insecure_accepts_anything(pve: FakePve, make_cluster: MakeCluster) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    async with RestBackend(make_cluster(tls=TlsMode.INSECURE, fingerprint=None)) as backend:
        assert (await backend.call("GET", "/version")).data == {"version": "9.2"}


def test_pin_on_plain_http_is_a_config_error(make_cluster: MakeCluster) -> None:
    with pytest.raises(ConfigError, match="https"):
        RestBackend(make_cluster(api_url="http://127.0.0.1:8006"))


async def test_missing_token_fails_before_any_request(
    pve: FakePve, make_cluster: MakeCluster
) -> None:
    pve.route("GET", "/version", pve_json({"version": "9.2"}))
    async with RestBackend(make_cluster(token_id=None, token_secret=None)) as backend:
        with pytest.raises(AuthenticationError, match="no API token") as info:
            await backend.call("GET", "/version")
    assert (info.value.method, info.value.path) == ("GET", "/version")
    assert pve.requests == []


def _all_texts(exc: ProxmoxError) -> str:
    return " ".join([str(exc), repr(exc), exc.message, *exc.errors.values(), *map(str, exc.args)])


async def test_secret_never_in_errors_reprs_or_logs(
    pve: FakePve, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def echo_auth(request: Request) -> Response:
        # A broken proxy that echoes the header it got: the message must be scrubbed.
        header = request.headers["authorization"]
        return pve_json(status=500, message=f"bad {header}", errors={"auth": header})

    pve.route("GET", "/echo", echo_auth)
    pve.route("GET", "/denied", Response(status_code=401))
    failures: list[ProxmoxError] = []
    clusters = [
        make_cluster(),
        make_cluster(fingerprint="00" * 32),
        make_cluster(tls=TlsMode.SYSTEM, fingerprint=None),
        make_cluster(api_url=f"https://127.0.0.1:{_closed_port()}", retries=1),
    ]
    for cluster in clusters:
        async with RestBackend(cluster) as backend:
            assert SECRET not in repr(backend)
            for path in ("/echo", "/denied", "/../x"):
                try:
                    await backend.call("GET", path)
                except ProxmoxError as exc:
                    failures.append(exc)
    newline_secret = SecretStr(SECRET + "\n")
    async with RestBackend(make_cluster(token_secret=newline_secret)) as backend:
        with pytest.raises(AuthenticationError, match="cannot be sent") as info:
            await backend.call("GET", "/echo")
        failures.append(info.value)
    assert len(failures) == 13
    assert {type(failure) for failure in failures} >= {
        ServerError,
        AuthenticationError,
        TlsVerificationError,
        ProxmoxUnreachable,
        ParameterError,
    }
    for failure in failures:
        assert SECRET not in _all_texts(failure)
    assert any("**********" in failure.message for failure in failures)
    assert SECRET not in caplog.text


async def test_unreachable_message_names_host_and_port(make_cluster: MakeCluster) -> None:
    port = _closed_port()
    async with RestBackend(make_cluster(api_url=f"https://127.0.0.1:{port}")) as backend:
        with pytest.raises(ProxmoxUnreachable, match=f"127.0.0.1:{port}") as info:
            await backend.call("POST", "/nodes/pve1/qemu/100/status/start")
    assert "after" not in info.value.message  # POST: one attempt only


async def test_backend_name_and_repr() -> None:
    cluster = ClusterConfig(api_url="https://pve.example:8006", tls=TlsMode.INSECURE)
    async with RestBackend(cluster) as backend:
        assert backend.name == "rest"
        assert repr(backend) == "RestBackend(api_url='https://pve.example:8006', tls='insecure')"
