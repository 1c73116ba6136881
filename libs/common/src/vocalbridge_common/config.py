"""Configuration from the environment, parsed once at start-up into frozen objects.

Every variable is prefixed `VB_`. A missing required value fails start-up with
its name (ConfigError), never later in the middle of a request.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vocalbridge_common import topology

# The simulated providers a gateway has by default (VB_SIMULATED_PROVIDERS may
# name others, for demos and tests); real OpenAI-compatible endpoints are added
# by name in VB_OPENAI_PROVIDERS, Anthropic endpoints in VB_ANTHROPIC_PROVIDERS
# (and configured by the conversation service).
SIMULATED_PROVIDERS = ("vendorA", "vendorB")


def provider_names(env: Env) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(simulated, OpenAI-compatible, Anthropic) provider names, as every service must agree on them."""
    return (
        env.list("VB_SIMULATED_PROVIDERS", SIMULATED_PROVIDERS),
        env.list("VB_OPENAI_PROVIDERS", ()),
        env.list("VB_ANTHROPIC_PROVIDERS", ()),
    )


class ConfigError(RuntimeError):
    """A configuration value is missing or malformed; the message names the variable."""


class Env:
    """Typed reads from an environment mapping (os.environ by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"required environment variable {name} is not set")
        return default

    def optional(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def int(self, name: builtins.str, default: builtins.int) -> builtins.int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

    def float(self, name: builtins.str, default: builtins.float) -> builtins.float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None

    def list(self, name: builtins.str, default: tuple[builtins.str, ...]) -> tuple[builtins.str, ...]:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class CommonSettings:
    """What every service reads: where it listens, its database, the identity secret."""

    service_name: str
    listen_host: str
    port: int
    database_url: str
    identity_secret: bytes
    log_level: str
    known_providers: tuple[str, ...]
    shutdown_grace_seconds: float
    # Connections per process, opened once and kept (a burst waits for a free one): processes
    # (replicas × workers) × services × this must stay under the PostgreSQL server's
    # max_connections.
    database_pool_size: int = 5
    # Where the process serves GET /metrics (Prometheus), on listen_host; 0: not served.
    metrics_port: int = 0

    @classmethod
    def from_env(cls, service_name: str, default_port: int, env: Env | None = None) -> CommonSettings:
        env = env or Env()
        upper = service_name.upper()
        data_dir = Path(env.str("VB_DATA_DIR", "var"))
        database_url = env.optional(f"VB_{upper}_DATABASE_URL") or env.optional("VB_DATABASE_URL")
        if database_url is None:
            # The embedded default: one SQLite file per service.
            database_url = f"sqlite+aiosqlite:///{data_dir / (service_name + '.db')}"
        secret = env.str("VB_IDENTITY_SECRET")
        if len(secret) < 32:
            raise ConfigError("VB_IDENTITY_SECRET must be at least 32 characters")
        return cls(
            service_name=service_name,
            listen_host=env.str(f"VB_{upper}_HOST", "127.0.0.1"),
            port=env.int(f"VB_{upper}_PORT", default_port),
            database_url=database_url,
            identity_secret=secret.encode(),
            log_level=env.str("VB_LOG_LEVEL", "INFO"),
            known_providers=sum(provider_names(env), ()),
            shutdown_grace_seconds=env.float("VB_SHUTDOWN_GRACE_SECONDS", 5.0),
            database_pool_size=env.int("VB_DATABASE_POOL_SIZE", 5),
            metrics_port=env.int(f"VB_{upper}_METRICS_PORT", topology.METRICS_PORTS.get(service_name, 0)),
        )
