"""What a verified token says about its caller, without the verification stack.

Kept apart from `oidc` so that resolving the caller of a stdio request (which never has a
token) does not import the JOSE library: a stdio start loads only what stdio needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a bearer token: how logs and audit name a token, never by value."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def groups_from_claims(claims: Mapping[str, Any] | None, claim: str) -> frozenset[str]:
    """The caller's groups from `claim` (a list of strings, or one string), for policy.

    Anything else yields no groups rather than an error: groups only ever add matches to
    `group:` rules, so a malformed claim must not widen nor break access.
    """
    value = (claims or {}).get(claim)
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()
