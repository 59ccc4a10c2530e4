"""Two-step confirmation tokens for risky calls whose client cannot be asked directly, and
the approval states that bind a person's answer to the call it was asked about.

The first call returns a plan and a token; the second call, with the same arguments plus
the token, runs. A token is an HMAC over a hash of the exact tool, arguments, target and
caller, expires in minutes and is single-use, so it cannot be replayed, altered or carried
to another call or caller.

A 2026-07-28 client is asked in the retry itself (MCP's input-required flow): the question
goes out with an approval state (`ApprovalStates`, the same HMAC scheme under its own key
and prefix) as its `requestState`, and the client's retry brings the state back with the
person's answer. The state binds that answer to the call re-planned on the retry, once.
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
from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(frozen=True, slots=True)
class Answer:
    """A person's answer to a confirmation question, as the transport that asked learned it."""

    method: Literal["elicitation", "input_required"]
    approved: bool | None
    """None: the question is on its way (input-required), the answer comes with the retry."""
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Audit keywords for `decision.approval` (e.g. the approval state's id)."""


class ConfirmationTokens:
    """Issues and redeems tokens. The key is random per process unless one is given, so a
    token is redeemable only by the replica that issued it (its single-use memory is local
    too)."""

    prefix = "pvc1"
    noun = "confirmation token"

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
        return f"{self.prefix}.{_b64(body)}.{_b64(signature)}"

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
            raise self.invalid(f"the {self.noun} is malformed") from None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if prefix != self.prefix or not hmac.compare_digest(signature, expected):
            raise self.invalid(f"the {self.noun} was not issued by this gateway")
        if not isinstance(claims, dict) or claims.get("b") != bound:
            raise self.invalid(
                f"the {self.noun} was issued for a different call (tool, arguments, "
                "target or caller changed)"
            )
        now = time.time()
        if int(claims.get("exp", 0)) < now:
            raise self.invalid(f"the {self.noun} has expired")
        nonce = str(claims.get("n"))
        with self._lock:
            self._used = {n: exp for n, exp in self._used.items() if exp >= now}
            if nonce in self._used:
                raise self.invalid(f"the {self.noun} was already used")
            self._used[nonce] = float(claims["exp"])
        return nonce

    def invalid(self, message: str) -> ToolFailure:
        """The refusal of a call whose token does not hold."""
        return ToolFailure(
            "confirmation_invalid",
            message,
            field=CONFIRM_FIELD,
            hint="Call again without confirm_token to get a fresh plan and token, and have the "
            "user approve it.",
        )


class ApprovalStates(ConfirmationTokens):
    """The approval states of the input-required flow: a separate key and prefix, so a state
    can never pass as a `confirm_token` (nor a token as a state), and refusals that say
    what to do instead of naming a field the caller never sent."""

    prefix = "pva1"
    noun = "approval (requestState)"

    def invalid(self, message: str) -> ToolFailure:
        return ToolFailure(
            "confirmation_invalid",
            message,
            hint="Call the tool again as a new call (no requestState) so the user is asked "
            "again; do not resend an earlier answer.",
        )
