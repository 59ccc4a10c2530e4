"""`pvemcp secrets check`: where each cluster's credentials (and each of its identity
mappings' tokens) come from and whether they load.

It never prints a value: only sources, token ids (public), counts and error messages, and
its whole output goes through a redaction set holding every value it loaded.
"""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from pvemcp.secrets.redaction import Redactor
from pvemcp.secrets.source import SecretSource, SettingsLike, build_identity_source, build_source
from pvemcp.secrets.types import ClusterCredentials, SecretSourceError

CHECK_TIMEOUT = 30.0


def _summary(credentials: ClusterCredentials) -> list[str]:
    lines: list[str] = []
    token = credentials.token
    if token is not None:
        version = f", version {credentials.version}" if credentials.version else ""
        lines.append(f"  api token: OK ({token.token_id}, secret loaded{version})")
    ssh = credentials.ssh
    if ssh is None:
        lines.append("  ssh: not configured")
    else:
        if ssh.private_key is not None:
            key = "private key loaded"
        elif ssh.key_path is not None:
            key = f"key file {ssh.key_path}" + ("" if ssh.key_path.exists() else " (MISSING)")
        else:
            key = "no key"
        passphrase = ", passphrase loaded" if ssh.passphrase is not None else ""
        nodes = ", ".join(f"{node}: {len(keys)}" for node, keys in sorted(ssh.host_keys.items()))
        host_keys = f"host keys {nodes}" if nodes else "NO host keys pinned"
        lines.append(f"  ssh: OK (user {ssh.user}, {key}{passphrase}, {host_keys})")
    return lines


async def _load(source: SecretSource, redactor: Redactor) -> ClusterCredentials | str:
    """The credentials `source` loads now (their values join `redactor`), or why not."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            credentials = await source.load()
    except SecretSourceError as exc:
        return exc.message
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    finally:
        await source.aclose()
    redactor.add(*credentials.secret_values())
    return credentials


async def check_async(settings: SettingsLike, out: TextIO) -> int:
    """Print one block per cluster, with its identity mappings; 0 when every cluster's
    credentials and every mapping's token load, else 1."""
    clusters = settings.all_clusters()
    if not clusters:
        print(
            "no cluster is configured, so there are no credentials to check (`pvemcp serve` "
            "refuses to start; `pvemcp demo` generates its simulator's at start)",
            file=out,
        )
        return 1
    redactor = Redactor()
    failures = 0
    for name, cluster in sorted(clusters.items()):
        lines: list[str] = []
        try:
            source = build_source(name, cluster, sink=redactor.add)
        except Exception as exc:  # a source that cannot even be built
            failures += 1
            print(f"cluster {name}: FAILED ({type(exc).__name__})", file=out)
            continue
        lines.append(f"cluster {name}: {source.describe()}")
        loaded = await _load(source, redactor)
        failed = isinstance(loaded, str)
        lines.extend([f"  FAILED: {loaded}"] if isinstance(loaded, str) else _summary(loaded))
        for mapping in cluster.identities:
            where = f"  identity {mapping.name} ({mapping.principal})"
            try:
                source = build_identity_source(name, mapping, sink=redactor.add)
            except Exception as exc:  # a source that cannot even be built
                failed = True
                lines.append(f"{where}: FAILED ({type(exc).__name__})")
                continue
            lines.append(f"{where}: {source.describe()}")
            token = await _load(source, redactor)
            if isinstance(token, str):
                failed = True
                lines.append(f"    FAILED: {token}")
            elif token.token is not None:
                lines.append(f"    api token: OK ({token.token.token_id}, secret loaded)")
        failures += failed
        print(redactor.text("\n".join(lines)), file=out)
    total = len(clusters)
    print(
        f"{total - failures} of {total} cluster(s) OK" if failures else f"all {total} OK",
        file=out,
    )
    return 1 if failures else 0


def check(settings: SettingsLike, *, out: TextIO | None = None) -> int:
    """The `pvemcp secrets check` command (synchronous; runs its own event loop)."""
    return anyio.run(check_async, settings, out if out is not None else sys.stdout)
