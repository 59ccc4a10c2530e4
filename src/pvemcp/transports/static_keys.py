"""Shared bearer keys (`auth = "static"`): for loopback and development, not for people.

Each key is compared with the presented token in constant time, and every key is compared
(no early exit), so timing reveals neither which key nearly matched nor how many there are.
The comparison is of SHA-256 digests: equal lengths, so not even a key's length leaks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from mcp.server.auth.provider import AccessToken
from pydantic import SecretStr

from pvemcp.config import ConfigError
from pvemcp.transports.oidc import FailureHook, report_failure

STATIC_CLIENT_ID = "static"


class StaticKeyVerifier:
    """The SDK `TokenVerifier` for `http.static_keys`.

    A caller holding the key named NAME is subject `static:NAME`, client `static`, with
    `scopes`: the scopes every token must carry (`oidc.required_scopes`), so the SDK's
    global scope gate admits it like a minimal OIDC token. Anything finer is the policy's
    business (`sub:static:NAME`), never the key's; the name is what audit records show.
    """

    def __init__(
        self,
        keys: Mapping[str, SecretStr],
        *,
        resource: str,
        scopes: Sequence[str] = (),
        on_failure: FailureHook | None = None,
    ) -> None:
        if not keys:
            raise ConfigError(
                'http.auth = "static" needs at least one key in http.static_keys '
                '(or use auth = "oidc")'
            )
        empty = [name for name, key in keys.items() if not key.get_secret_value()]
        if empty:
            raise ConfigError(f"http.static_keys.{empty[0]} is empty: give it a key")
        self._digests = [
            (name, hashlib.sha256(key.get_secret_value().encode()).digest())
            for name, key in keys.items()
        ]
        seen: dict[bytes, str] = {}
        for name, digest in self._digests:
            if digest in seen:
                raise ConfigError(
                    f"http.static_keys.{seen[digest]} and .{name} hold the same key: each "
                    "holder needs its own, or the audit log cannot tell them apart"
                )
            seen[digest] = name
        self._resource = resource
        self._scopes = list(scopes)
        self._on_failure = on_failure

    async def verify_token(self, token: str) -> AccessToken | None:
        """The key holder's identity if `token` equals one of the keys, else `None` (→ 401)."""
        token = token.strip()
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        match: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest) and match is None:
                match = name
        if match is None:
            report_failure(self._on_failure, "unknown_key", token)
            return None
        return AccessToken(
            token=token,
            client_id=STATIC_CLIENT_ID,
            scopes=list(self._scopes),
            expires_at=None,
            resource=self._resource,
            subject=f"static:{match}",
        )
