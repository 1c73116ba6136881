"""Auth service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from vocalbridge_auth.domain import digest
from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.topology import default_port


@dataclass(frozen=True)
class AuthSettings:
    common: CommonSettings
    # SHA-256 digest of the operator key (VB_OPERATOR_API_KEY); the key itself is not kept.
    operator_key_digest: str
    # How long a key lookup is cached; a revoked key is refused at most this long after revocation.
    key_cache_ttl_seconds: float
    # Lifetime of the signed identity header minted by Check.
    identity_ttl_seconds: int

    @classmethod
    def from_env(cls, env: Env | None = None) -> AuthSettings:
        env = env or Env()
        operator_key = env.str("VB_OPERATOR_API_KEY")
        if len(operator_key) < 24:
            raise ConfigError("VB_OPERATOR_API_KEY must be at least 24 characters")
        return cls(
            common=CommonSettings.from_env("auth", default_port("auth"), env),
            operator_key_digest=digest(operator_key),
            key_cache_ttl_seconds=env.float("VB_AUTH_KEY_CACHE_TTL_SECONDS", 5.0),
            identity_ttl_seconds=env.int("VB_IDENTITY_TTL_SECONDS", 300),
        )
