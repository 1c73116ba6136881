"""Auth service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from vocalbridge_auth.domain import DEFAULT_ROTATION_OVERLAP, MAX_ROTATION_OVERLAP, digest
from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.topology import default_address, default_port


@dataclass(frozen=True)
class AuthSettings:
    common: CommonSettings
    # SHA-256 digest of the operator key (VB_OPERATOR_API_KEY); the key itself is not kept.
    operator_key_digest: str
    # How long a key lookup is cached; a revoked key is refused at most this long after revocation.
    key_cache_ttl_seconds: float
    # Lifetime of the signed identity header minted by Check.
    identity_ttl_seconds: int
    # Rate limits and budgets: the counters (Redis), failure modes, tenant-wide defaults.
    limits: LimitSettings = field(default_factory=LimitSettings)
    # Billing, whose ledger re-seeds a budget window the counters lost (GetBudget's usage).
    billing_address: str = default_address("billing")
    # How long a rotated key keeps working when the request does not say.
    rotation_overlap: timedelta = DEFAULT_ROTATION_OVERLAP

    @classmethod
    def from_env(cls, env: Env | None = None) -> AuthSettings:
        env = env or Env()
        operator_key = env.str("VB_OPERATOR_API_KEY")
        if len(operator_key) < 24:
            raise ConfigError("VB_OPERATOR_API_KEY must be at least 24 characters")
        overlap = timedelta(seconds=env.float("VB_ROTATION_OVERLAP_SECONDS", DEFAULT_ROTATION_OVERLAP.total_seconds()))
        if not timedelta(0) <= overlap <= MAX_ROTATION_OVERLAP:
            raise ConfigError("VB_ROTATION_OVERLAP_SECONDS must be from 0 to 2592000 (30 days)")
        return cls(
            limits=LimitSettings.from_env(env),
            billing_address=env.str("VB_BILLING_ADDRESS", default_address("billing")),
            rotation_overlap=overlap,
            common=CommonSettings.from_env("auth", default_port("auth"), env),
            operator_key_digest=digest(operator_key),
            key_cache_ttl_seconds=env.float("VB_AUTH_KEY_CACHE_TTL_SECONDS", 5.0),
            identity_ttl_seconds=env.int("VB_IDENTITY_TTL_SECONDS", 300),
        )
