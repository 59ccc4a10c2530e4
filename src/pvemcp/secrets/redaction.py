"""Redaction: what must never leave the process, removed from logs, audit and tool output.

Three nets, because each catches what the others miss: by value (every secret the gateway
loaded, also base64- and URL-encoded), by key name (`password`, `token`, ...), and by pattern
(PVE token headers, tickets, JWTs, Vault tokens, private keys).
"""

from __future__ import annotations

import base64
import functools
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MASK = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(pass(word|phrase)?|secret|token|ticket|csrfpreventiontoken|encryption-key|keyring|"
    r"private[-_]?key|api[-_]?key|authorization|cookie)",
    re.IGNORECASE,
)
# Keys that contain a secret-looking word but hold none.
_SAFE_KEYS = frozenset({"tokenid", "token_id", "full-tokenid", "tokens", "passthrough"})


class _Rule(NamedTuple):
    """One secret-shaped pattern, what replaces a match, and what every match contains.

    `needs` is a regular expression that matches somewhere in any text `pattern` matches
    in (a cheap necessary condition, usually a literal), so text where no `needs` matches
    is text the pattern leaves alone. For a case-insensitive pattern it must be lower-case
    literal words joined by `|` (checked below), matched case-insensitively.
    """

    pattern: re.Pattern[str]
    replacement: str
    needs: str


_PATTERNS: tuple[_Rule, ...] = (
    _Rule(re.compile(r"PVEAPIToken=[^\s\"',;]+"), MASK, "PVEAPIToken="),
    _Rule(re.compile(r"PVE:[^\s:]+@[^\s:]+:[0-9A-Fa-f]{8}::[A-Za-z0-9+/=]+"), MASK, "PVE:"),
    _Rule(
        re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK, r"\.eyJ"
    ),
    _Rule(re.compile(r"\b(hvs|hvb|hvr)\.[A-Za-z0-9_-]{20,}"), MASK, r"\.[A-Za-z0-9_-]{20}"),
    # Legacy Vault and OpenBao tokens: service (s.), batch (b.), recovery (r.), 24 chars.
    _Rule(re.compile(r"(?<![\w.])[sbr]\.[A-Za-z0-9]{24}(?![\w.])"), MASK, r"\.[A-Za-z0-9]{24}"),
    _Rule(re.compile(r"(?i)(x-vault-token\s*[:=]\s*)[^\s,;\"']+"), rf"\1{MASK}", "x-vault-token"),
    _Rule(
        re.compile(
            r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----.*?-----END ([A-Z ]+ )?PRIVATE KEY-----",
            re.DOTALL,
        ),
        MASK,
        "PRIVATE KEY-----",
    ),
    # A key cut off by an output cap has no END line: mask from BEGIN to the end of text.
    _Rule(
        re.compile(r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----(?:(?!-----END ).)*\Z", re.DOTALL),
        MASK,
        "PRIVATE KEY-----",
    ),
    _Rule(
        re.compile(r"(?i)\b(authorization|cookie)\s*:\s*[^\r\n]+"),
        rf"\1: {MASK}",
        "authorization|cookie",
    ),
    _Rule(re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@", "://"),
)


class _Needs(NamedTuple):
    """The pre-check, built from every rule's `needs`.

    The case-sensitive ones as one alternation (cheapest on short text, one pass) and one
    by one (cheaper on long text: each starts with a literal, which `re` finds with a fast
    scan, while the alternation tests a set of first characters at every position). The
    case-insensitive ones as words, for lower-cased ASCII text, and as one regex.
    """

    joined: re.Pattern[str]
    each: tuple[re.Pattern[str], ...]
    words: tuple[str, ...]
    caseless: re.Pattern[str]


def _build_needs(rules: tuple[_Rule, ...]) -> _Needs:
    exact: dict[str, None] = {}
    words: dict[str, None] = {}
    for rule in rules:
        if not rule.pattern.flags & re.IGNORECASE:
            exact[rule.needs] = None
        elif re.fullmatch(r"[a-z0-9 :=/-]+(\|[a-z0-9 :=/-]+)*", rule.needs):
            words.update(dict.fromkeys(rule.needs.split("|")))
        else:
            raise ValueError(f"needs of {rule.pattern.pattern!r} must be lower-case words")
    return _Needs(
        joined=re.compile("|".join(exact)),
        each=tuple(map(re.compile, exact)),
        words=tuple(words),
        caseless=re.compile("|".join(map(re.escape, words)), re.IGNORECASE),
    )


_NEEDS = _build_needs(_PATTERNS)
_LONG_TEXT = 64
"""From this length on, `_NEEDS.each` is cheaper than `_NEEDS.joined` (measured)."""


def _may_hold_secret(text: str, values: re.Pattern[str] | None) -> bool:
    """False only when no value and no pattern can match in `text`: the common case.

    Then every substitution in `Redactor.text` would be a no-op, so skipping them changes
    nothing; the check costs a few fast scans instead of one `sub` per pattern. For ASCII
    text a case-insensitive regex matches a lower-case ASCII word exactly where the
    lower-cased text contains it (the Unicode case equivalences `re` adds, like U+0131 for
    `i` or U+212A for `k`, are not ASCII), and `in` is the fastest scan there is.
    """
    if values is not None and values.search(text) is not None:
        return True
    if len(text) < _LONG_TEXT:
        if _NEEDS.joined.search(text) is not None:
            return True
    elif any(needs.search(text) is not None for needs in _NEEDS.each):
        return True
    if text.isascii():
        return any(map(text.lower().__contains__, _NEEDS.words))
    return _NEEDS.caseless.search(text) is not None


_SCALARS = frozenset({int, float, bool, type(None)})
"""JSON values with nothing to redact (exact types: a subclass might be anything)."""

# Shorter values would mask common words or numbers and make output useless.
MIN_VALUE_LENGTH = 6


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (so its value is masked whatever it is).

    Remembered per key: an answer repeats the same few keys in every row, and the answer
    to a key never changes (about a quarter of redacting a guest list, bench/bench.py)."""
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
        regex = self._regex  # one snapshot: `add` may replace it meanwhile
        if not _may_hold_secret(text, regex):
            return text
        if regex is not None:
            text = regex.sub(MASK, text)
        for pattern, replacement, _ in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """Redact a JSON-like value: secret keys masked, every string scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if type(value) in _SCALARS:  # most of an answer; spares the slow `Mapping` check
            return value
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
