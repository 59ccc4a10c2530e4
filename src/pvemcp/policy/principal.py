"""The caller of a tool: who it is, as policy and audit see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["stdio", "http", "memory"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    stdio and in-memory callers are the process owner: subject `local`. HTTP callers carry
    their token's claims (a later transport fills them in). `token_sha256` identifies a
    token in audit without ever storing it.
    """

    subject: str
    transport: Transport
    client_id: str | None = None
    issuer: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    token_sha256: str | None = None
    session: str | None = None

    @classmethod
    def local(cls, transport: Transport = "stdio", session: str | None = None) -> Principal:
        """The operator who started the process (stdio or an in-process client)."""
        return cls(subject="local", transport=transport, session=session)

    @property
    def person(self) -> tuple[str, str | None]:
        """Who this is across clients and sessions: the subject from its issuer. Tasks,
        undo entries and approval requests are a person's, whatever client they use."""
        return (self.subject, self.issuer)

    @property
    def is_local(self) -> bool:
        return self.subject == "local" and self.transport in ("stdio", "memory")
