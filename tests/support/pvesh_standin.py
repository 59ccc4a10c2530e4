"""A `pvesh` stand-in: pvesh's command line and output, served by the simulator's REST API.

Installed as `pvesh` on the test sshd's PATH (see `tests.support.sshd`), so the pvesh
backend runs end to end over real SSH without a Proxmox node. Settings come from the
environment, which the wrapper script sets since sshd passes none:

    PVEMCP_SIM_URL    https://127.0.0.1:PORT (the simulator)
    PVEMCP_SIM_TOKEN  user@realm!id=secret
    PVEMCP_SIM_CA     the simulator's certificate (PEM), trusted for TLS

What it reproduces (see proxmox-api.md, "pvesh over SSH"):
- `pvesh [--noproxy] [--nooutput] get|set|create|delete|ls|usage <path> [options]`;
- options `--name value`, `-name value` or `--name=value`; a repeated option is a list;
  an option without a value (last, or followed by another option) is the boolean 1, and
  `yes|no|on|off|true|false` become 1/0 (real pvesh knows the types from the schema; this
  stand-in does not, so a value starting with `-` needs the `--name=value` form);
- `--output-format json|json-pretty|text` (default text): json is compact with sorted keys
  and a newline; a null result prints nothing;
- async methods run "in the foreground": the task's log goes to stdout, a failure message
  to stderr, then the UPID as the last line, and the exit status is 0 even if the task
  failed (pvesh does not check the task result);
- errors: exit 255 with `<code> <message>` and `param: error` lines on stderr; an unknown
  path or method exits 1 with `No '<cmd>' handler defined for '<path>'`.

Standard library only: it runs under the system Python as the SSH test user.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

COMMANDS = {"get": "GET", "set": "PUT", "create": "POST", "delete": "DELETE"}
FORMATS = ("json", "json-pretty", "text")
BOOLEANS = {"yes": "1", "on": "1", "true": "1", "no": "0", "off": "0", "false": "0"}
UPID_RE = re.compile(r"^UPID:[A-Za-z0-9-]+:[0-9A-Fa-f]{8}:")
LS_KEYS = ("subdir", "name", "node", "vmid", "storage", "id")
TASK_POLL = 0.05
TASK_WAIT = 60.0


class Failure(Exception):
    """Exit with `status` after printing `lines` on stderr."""

    def __init__(self, status: int, *lines: str) -> None:
        super().__init__(lines[0] if lines else "")
        self.status = status
        self.lines = lines


def parse_options(args: list[str]) -> dict[str, str | list[str]]:
    """pvesh-style options into a mapping; repeated names become lists."""
    found: dict[str, str | list[str]] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise Failure(255, f"400 too many arguments: {arg!r}", "")
        name, has_value, value = arg.lstrip("-").partition("=")
        if not has_value:
            following = args[index + 1] if index + 1 < len(args) else None
            if following is None or following.startswith("-"):
                value = "1"
            else:
                value, index = following, index + 1
        value = BOOLEANS.get(value.lower(), value)
        previous = found.get(name)
        if previous is None:
            found[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            found[name] = [previous, value]
        index += 1
    return found


class Api:
    """The simulator's REST API with the configured token and CA."""

    def __init__(self) -> None:
        try:
            self.url = os.environ["PVEMCP_SIM_URL"].rstrip("/")
            self.token = os.environ["PVEMCP_SIM_TOKEN"]
            self.context = ssl.create_default_context(cafile=os.environ["PVEMCP_SIM_CA"])
        except KeyError as exc:
            raise Failure(255, f"pvesh stand-in: {exc.args[0]} is not set") from None

    def call(self, method: str, path: str, params: dict[str, str | list[str]]) -> Any:
        segments = [urllib.parse.quote(s, safe=":@!,=") for s in path.split("/") if s]
        url = f"{self.url}/api2/json/" + "/".join(segments)
        form = urllib.parse.urlencode(params, doseq=True, quote_via=urllib.parse.quote)
        body = None
        if method in ("GET", "DELETE"):
            url += f"?{form}" if form else ""
        else:
            body = form.encode()
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Authorization", f"PVEAPIToken={self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as answer:
                return json.loads(answer.read()).get("data")
        except urllib.error.HTTPError as exc:
            raise self._failure(exc, method, path) from None

    @staticmethod
    def _failure(exc: urllib.error.HTTPError, method: str, path: str) -> Failure:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        if exc.code == 501:
            command = {v: k for k, v in COMMANDS.items()}[method]
            return Failure(1, f"No '{command}' handler defined for '{path}'")
        message = (body.get("message") or exc.reason or f"HTTP {exc.code}").strip()
        lines = [f"{exc.code} {message}"]
        lines += [f"{name}: {text}" for name, text in sorted((body.get("errors") or {}).items())]
        return Failure(255, *lines)


def render(data: Any, output_format: str) -> str:
    """The result as pvesh prints it; '' for null."""
    if data is None:
        return ""
    if output_format == "json":
        return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    if output_format == "json-pretty":
        return json.dumps(data, sort_keys=True, indent=4) + "\n"
    if isinstance(data, dict):
        return "".join(f"{key}: {value}\n" for key, value in sorted(data.items()))
    if isinstance(data, list):
        return "".join(render(item, "json") for item in data)
    return f"{data}\n"


def run_task(api: Api, upid: str) -> None:
    """What pvesh's foreground worker shows: the task's log, and its error on stderr."""
    node = upid.split(":")[1]
    deadline = time.monotonic() + TASK_WAIT
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = api.call("GET", f"/nodes/{node}/tasks/{upid}/status", {}) or {}
        if status.get("status") == "stopped":
            break
        time.sleep(TASK_POLL)
    for line in api.call("GET", f"/nodes/{node}/tasks/{upid}/log", {"limit": "0"}) or []:
        if isinstance(line, dict) and not str(line.get("t", "")).startswith("TASK "):
            sys.stdout.write(f"{line.get('t', '')}\n")
    exitstatus = status.get("exitstatus")
    if exitstatus not in (None, "OK") and not str(exitstatus).startswith("WARNINGS"):
        sys.stderr.write(f"{exitstatus}\n")


def main(argv: list[str]) -> int:
    args = list(argv)
    while args and args[0] in ("--noproxy", "--nooutput"):
        args.pop(0)
    if not args:
        raise Failure(255, "ERROR: no command specified")
    command, rest = args[0], args[1:]
    if command not in (*COMMANDS, "ls", "usage"):
        raise Failure(255, f"ERROR: unknown command 'pvesh {command}'")
    if not rest or rest[0].startswith("-"):
        raise Failure(255, "400 not enough arguments", "path: property is missing")
    path = "/" + rest[0].strip("/")
    options = parse_options(rest[1:])
    output_format = options.pop("output-format", "text")
    if not isinstance(output_format, str) or output_format not in FORMATS:
        raise Failure(255, "400 Parameter verification failed.", "output-format: bad value")
    if command == "usage":
        sys.stdout.write(f"USAGE: pvesh {{get|set|create|delete}} {path} [OPTIONS]\n")
        return 0
    api = Api()
    data = api.call(COMMANDS.get(command, "GET"), path, options)
    if command == "ls":
        for item in data if isinstance(data, list) else []:
            name = (
                next((item[k] for k in LS_KEYS if k in item), "")
                if isinstance(item, dict)
                else item
            )
            sys.stdout.write(f"Dr---        {name}\n")
        return 0
    if isinstance(data, str) and UPID_RE.match(data):
        run_task(api, data)
    sys.stdout.write(render(data, output_format))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as failure:
        sys.stdout.flush()
        sys.stderr.write("".join(f"{line}\n" for line in failure.lines if line))
        sys.exit(failure.status)
