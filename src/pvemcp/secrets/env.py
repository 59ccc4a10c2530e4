"""Credentials from environment variables (`PVEMCP_TOKEN_SECRET`, ...), re-read on demand."""

from __future__ import annotations

import os
from typing import Any

import structlog

from pvemcp.secrets.models import EnvCredentials
from pvemcp.secrets.source import SecretSource
from pvemcp.secrets.types import ClusterCredentials, SecretSourceError, credentials_from_mapping

log = structlog.get_logger(__name__)

FIELDS = (
    "token_id",
    "token_secret",
    "ssh_user",
    "ssh_private_key",
    "ssh_key_path",
    "ssh_passphrase",
    "ssh_host_keys",
)


class EnvSource(SecretSource):
    kind = "env"
    refreshable = True

    def __init__(self, name: str, config: EnvCredentials, *, fallback_token_id: str | None):
        self._name = name
        self._config = config
        self._fallback = fallback_token_id
        self.refresh_interval = config.refresh_interval

    def describe(self) -> str:
        return f"env {self._config.var('TOKEN_SECRET')} (prefix {self._config.prefix})"

    async def load(self) -> ClusterCredentials:
        secret_var = self._config.var("TOKEN_SECRET")
        if not os.environ.get(secret_var):
            raise SecretSourceError(
                f"env: variable {secret_var} is not set or empty (cluster {self._name}); "
                "export it in the gateway's environment, or change credentials.prefix"
            )
        data: dict[str, Any] = {}
        for key in FIELDS:
            value = os.environ.get(self._config.var(key.upper()))
            if value:
                data[key] = value
        try:
            return credentials_from_mapping(
                data,
                where=f"env (prefix {self._config.prefix})",
                fallback_token_id=self._fallback,
                origin=self.describe(),
            )
        except SecretSourceError as exc:
            # Name the variable, not the payload key.
            message = exc.message
            for key in FIELDS:
                message = message.replace(f": {key} ", f": {self._config.var(key.upper())} ")
            raise SecretSourceError(message) from None
