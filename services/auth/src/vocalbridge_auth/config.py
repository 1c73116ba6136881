"""Auth service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from vocalbridge_auth.domain import DEFAULT_ROTATION_OVERLAP, MAX_ROTATION_OVERLAP, digest
from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.headers import EDGE_SECRET_ENV
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.topology import default_address, default_port

# An identity is used by the request it was minted for, within its first moments (the services
# read it on arrival and forward it only on the calls a request starts with).
DEFAULT_IDENTITY_TTL_SECONDS = 15
MAX_IDENTITY_TTL_SECONDS = 300


@dataclass(frozen=True)
class AuthSettings:
    common: CommonSettings
    # SHA-256 digest of the operator key (VB_OPERATOR_API_KEY); the key itself is not kept.
    operator_key_digest: str
    # How long a key lookup is cached; a revoked key is refused at most this long after revocation.
    key_cache_ttl_seconds: float
    # Lifetime of the signed identity header minted by Check: seconds, so that an identity
    # minted for a key that is then revoked is refused everywhere soon after (the key cache
    # TTL plus this).
    identity_ttl_seconds: int
    # The secret Envoy sends on every Check (VB_EDGE_SECRET): Check answers no one else.
    edge_secret: bytes
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
        edge_secret = env.str(EDGE_SECRET_ENV)
        if len(edge_secret) < 32:
            raise ConfigError(f"{EDGE_SECRET_ENV} must be at least 32 characters")
        identity_ttl = env.int("VB_IDENTITY_TTL_SECONDS", DEFAULT_IDENTITY_TTL_SECONDS)
        if not 1 <= identity_ttl <= MAX_IDENTITY_TTL_SECONDS:
            raise ConfigError(f"VB_IDENTITY_TTL_SECONDS must be from 1 to {MAX_IDENTITY_TTL_SECONDS}")
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
            identity_ttl_seconds=identity_ttl,
            edge_secret=edge_secret.encode(),
        )
