"""Redaction: what must never leave the process, removed from logs, audit and tool output.

Three nets, because each catches what the others miss: by value (every secret the gateway
loaded, also base64- and URL-encoded), by key name (`password`, `token`, ...), and by pattern
(PVE token headers, tickets, JWTs, Vault tokens, private keys).
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|phrase)?|secret|token|ticket|csrfpreventiontoken|encryption-key|keyring|"
    r"private[-_]?key|api[-_]?key|authorization|cookie)",
    re.IGNORECASE,
)
# Keys that contain a secret-looking word but hold none.
_SAFE_KEYS = frozenset({"tokenid", "token_id", "full-tokenid", "tokens", "passthrough"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"PVEAPIToken=[^\s\"',;]+"), MASK),
    (re.compile(r"PVE:[^\s:]+@[^\s:]+:[0-9A-Fa-f]{8}::[A-Za-z0-9+/=]+"), MASK),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\b(hvs|hvb|hvr)\.[A-Za-z0-9_-]{20,}"), MASK),
    # Legacy Vault and OpenBao tokens: service (s.), batch (b.), recovery (r.), 24 chars.
    (re.compile(r"(?<![\w.])[sbr]\.[A-Za-z0-9]{24}(?![\w.])"), MASK),
    (re.compile(r"(?i)(x-vault-token\s*[:=]\s*)[^\s,;\"']+"), rf"\1{MASK}"),
    (
        re.compile(
            r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----.*?-----END ([A-Z ]+ )?PRIVATE KEY-----",
            re.DOTALL,
        ),
        MASK,
    ),
    # A key cut off by an output cap has no END line: mask from BEGIN to the end of text.
    (re.compile(r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----(?:(?!-----END ).)*\Z", re.DOTALL), MASK),
    (re.compile(r"(?i)\b(authorization|cookie)\s*:\s*[^\r\n]+"), rf"\1: {MASK}"),
    (re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@"),
)

# Shorter values would mask common words or numbers and make output useless.
MIN_VALUE_LENGTH = 6


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (so its value is masked whatever it is)."""
    lowered = key.lower()
    return lowered not in _SAFE_KEYS and bool(_SECRET_KEY.search(lowered))


def _forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
    }


class Redactor:
    """The process-wide redaction set. Thread-safe; values can be added at any time."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        """Add secret values (and their encoded forms) to the set."""
        with self._lock:
            for value in values:
                if value and len(value) >= MIN_VALUE_LENGTH:
                    self._values.update(_forms(value))
            ordered = sorted(self._values, key=len, reverse=True)
            self._regex = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, text: str) -> str:
        """Mask every known secret value and every secret-shaped pattern in `text`."""
        regex = self._regex
        if regex is not None:
            text = regex.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """Redact a JSON-like value: secret keys masked, every string scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                key: MASK
                if isinstance(key, str) and is_secret_key(key) and item not in (None, "")
                else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value
