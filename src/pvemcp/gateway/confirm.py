"""Two-step confirmation tokens for risky calls whose client cannot be asked directly.

The first call returns a plan and a token; the second call, with the same arguments plus
the token, runs. A token is an HMAC over a hash of the exact tool, arguments, target and
caller, expires in minutes and is single-use, so it cannot be replayed, altered or carried
to another call or caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from pvemcp.gateway.errors import ToolFailure

CONFIRM_FIELD = "confirm_token"


def binding(
    *,
    tool: str,
    arguments: Mapping[str, Any],
    cluster: str,
    target: Mapping[str, Any],
    caller: Mapping[str, Any],
) -> str:
    """SHA-256 of what a token is bound to (the arguments without the token itself)."""
    material = {
        "tool": tool,
        "arguments": {k: v for k, v in arguments.items() if k not in (CONFIRM_FIELD, "dry_run")},
        "cluster": cluster,
        "target": dict(target),
        "caller": dict(caller),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConfirmationTokens:
    """Issues and redeems tokens. The key is random per process unless one is given, so a
    token is redeemable only by the replica that issued it (its single-use memory is local
    too)."""

    def __init__(self, ttl: float, key: bytes | None = None) -> None:
        self.ttl = ttl
        self._key = key or secrets.token_bytes(32)
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, bound: str) -> str:
        body = json.dumps(
            {"b": bound, "exp": int(time.time() + self.ttl), "n": secrets.token_hex(8)},
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(self._key, body, hashlib.sha256).digest()
        return f"pvc1.{_b64(body)}.{_b64(signature)}"

    def redeem(self, token: str, bound: str) -> str:
        """Accept the token for this exact call once, or raise a `confirmation_invalid` failure.

        Returns the token's id (its random nonce): the audit names the token by it and by
        its hash, never by the token itself."""
        try:
            prefix, body_text, sig_text = token.split(".")
            body = _unb64(body_text)
            signature = _unb64(sig_text)
            claims = json.loads(body)
        except (ValueError, json.JSONDecodeError):
            raise _invalid("the confirmation token is malformed") from None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if prefix != "pvc1" or not hmac.compare_digest(signature, expected):
            raise _invalid("the confirmation token was not issued by this gateway")
        if not isinstance(claims, dict) or claims.get("b") != bound:
            raise _invalid(
                "the confirmation token was issued for a different call (tool, arguments, "
                "target or caller changed)"
            )
        now = time.time()
        if int(claims.get("exp", 0)) < now:
            raise _invalid("the confirmation token has expired")
        nonce = str(claims.get("n"))
        with self._lock:
            self._used = {n: exp for n, exp in self._used.items() if exp >= now}
            if nonce in self._used:
                raise _invalid("the confirmation token was already used")
            self._used[nonce] = float(claims["exp"])
        return nonce


def _invalid(message: str) -> ToolFailure:
    return ToolFailure(
        "confirmation_invalid",
        message,
        field=CONFIRM_FIELD,
        hint="Call again without confirm_token to get a fresh plan and token, and have the "
        "user approve it.",
    )
