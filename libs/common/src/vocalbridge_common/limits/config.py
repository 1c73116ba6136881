"""Limit settings from the environment, and the limiter a service builds from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from vocalbridge_common.config import ConfigError, Env
from vocalbridge_common.limits.limiter import FailureMode, KeySpace, Limiter, SpentSource
from vocalbridge_common.limits.model import (
    MAX_BUDGET_MICROS,
    MAX_REQUESTS_PER_MINUTE,
    MAX_TOKENS_PER_MINUTE,
    LimitDefaults,
)
from vocalbridge_common.limits.redis_store import RedisStore
from vocalbridge_common.limits.store import CounterStore, MemoryStore, StoreUnavailable

log = logging.getLogger(__name__)

STORES = ("auto", "redis", "memory")


@dataclass(frozen=True)
class LimitSettings:
    # auto: Redis when it answers at start-up, else in-process (said at start-up);
    # redis: Redis only (failures follow the failure modes); memory: in-process only.
    store: str = "auto"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "vb:"
    timeout_seconds: float = 0.25
    rate_failure: FailureMode = FailureMode.OPEN
    budget_failure: FailureMode = FailureMode.CLOSED
    # How long a process keeps a tenant's limits before reading them again.
    cache_ttl_seconds: float = 5.0
    # A turn that dies without settling frees its reservation after this.
    reservation_ttl_seconds: float = 900.0
    # The output a turn may produce when its agent sets no maximum and a budget applies.
    default_max_output_tokens: int = 4096
    # Characters a spoken reply is reserved for, per output token.
    reserved_characters_per_token: int = 16
    defaults: LimitDefaults = field(default_factory=LimitDefaults)

    @classmethod
    def from_env(cls, env: Env | None = None) -> LimitSettings:
        env = env or Env()
        store = env.str("VB_LIMITS_STORE", "auto")
        if store not in STORES:
            raise ConfigError(f"VB_LIMITS_STORE must be one of {', '.join(STORES)}, got {store!r}")

        def mode(name: str, default: FailureMode) -> FailureMode:
            raw = env.str(name, default.value)
            try:
                return FailureMode(raw)
            except ValueError:
                raise ConfigError(f"{name} must be 'open' or 'closed', got {raw!r}") from None

        def bounded(name: str, maximum: int) -> int | None:
            value = env.int(name, 0)
            if value < 0 or value > maximum:
                raise ConfigError(f"{name} must be between 0 (none) and {maximum}, got {value}")
            return value or None

        settings = cls(
            store=store,
            redis_url=env.str("VB_REDIS_URL", cls.redis_url),
            key_prefix=env.str("VB_REDIS_KEY_PREFIX", cls.key_prefix),
            timeout_seconds=env.float("VB_REDIS_TIMEOUT_MS", 250) / 1000,
            rate_failure=mode("VB_RATE_LIMITS_FAIL", FailureMode.OPEN),
            budget_failure=mode("VB_BUDGETS_FAIL", FailureMode.CLOSED),
            cache_ttl_seconds=env.float("VB_LIMITS_CACHE_TTL_SECONDS", 5.0),
            reservation_ttl_seconds=env.float("VB_BUDGET_RESERVATION_TTL_SECONDS", 900.0),
            default_max_output_tokens=env.int("VB_BUDGET_DEFAULT_MAX_OUTPUT_TOKENS", 4096),
            reserved_characters_per_token=env.int("VB_BUDGET_RESERVED_CHARACTERS_PER_TOKEN", 16),
            defaults=LimitDefaults(
                requests_per_minute=bounded("VB_DEFAULT_REQUESTS_PER_MINUTE", MAX_REQUESTS_PER_MINUTE),
                tokens_per_minute=bounded("VB_DEFAULT_TOKENS_PER_MINUTE", MAX_TOKENS_PER_MINUTE),
                monthly_budget_micros=bounded("VB_DEFAULT_MONTHLY_BUDGET_MICROS", MAX_BUDGET_MICROS),
            ),
        )
        if settings.timeout_seconds <= 0 or settings.cache_ttl_seconds < 0 or settings.reservation_ttl_seconds <= 0:
            raise ConfigError("VB_REDIS_TIMEOUT_MS and VB_BUDGET_RESERVATION_TTL_SECONDS must be positive")
        if settings.default_max_output_tokens < 1 or settings.reserved_characters_per_token < 1:
            raise ConfigError(
                "VB_BUDGET_DEFAULT_MAX_OUTPUT_TOKENS and VB_BUDGET_RESERVED_CHARACTERS_PER_TOKEN must be at least 1"
            )
        return settings


async def open_store(settings: LimitSettings, service: str) -> CounterStore:
    """The counter store the settings ask for; in `auto`, Redis if it answers now, else the
    in-process fallback, said in the log."""
    if settings.store == "memory":
        log.info("limits and budgets are counted in this process (VB_LIMITS_STORE=memory)")
        return MemoryStore()
    store = RedisStore.from_url(settings.redis_url, settings.timeout_seconds)
    if settings.store == "redis":
        return store
    try:
        await store.ping()
    except StoreUnavailable as error:
        await store.close()
        log.warning(
            "Redis at %s is not reachable (%s): %s counts limits and budgets in this process only "
            "(not shared with other workers or replicas); start Redis or set VB_REDIS_URL",
            _redacted(settings.redis_url),
            error,
            service,
        )
        return MemoryStore()
    log.info("limits and budgets are counted in Redis at %s", _redacted(settings.redis_url))
    return store


def _redacted(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


def build_limiter(store: CounterStore, settings: LimitSettings, spent: SpentSource | None) -> Limiter:
    return Limiter(
        store,
        keys=KeySpace(settings.key_prefix),
        rate_failure=settings.rate_failure,
        budget_failure=settings.budget_failure,
        spent=spent,
        reservation_ttl_seconds=settings.reservation_ttl_seconds,
    )
