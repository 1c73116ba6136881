"""Conversation service settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.idempotency import IdempotencySettings
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.outbox import RelaySettings
from vocalbridge_common.retention import RetentionSettings
from vocalbridge_common.topology import default_address, default_port
from vocalbridge_conversation.delivery import RetryPolicy

# This service's name: its identity in calls it makes on its own behalf, its database
# schema, its configuration prefix (topology).
SERVICE = "conversation"


@dataclass(frozen=True)
class TurnSettings:
    """The turn use case."""

    # Tokens of system prompt, history and new message sent to a provider; the oldest history goes first.
    context_budget_tokens: int = 4000
    max_content_chars: int = 32_000
    # An in-progress key whose worker has not finished within this is taken over.
    idempotency_lease: timedelta = timedelta(minutes=2)
    # A key is kept at least this long (24 h or more, as clients expect).
    idempotency_ttl: timedelta = timedelta(hours=24)
    # Sessions whose recent history a process keeps, so a turn reads only what is new (each
    # at most the context budget: 1000 sessions of a 4000-token budget hold under 20 MB).
    history_cache_sessions: int = 1000
    # A completion outside any session (the OpenAI-compatible API) uses its agent's current
    # version as read at most this long ago: an agent's change reaches completions within it.
    agent_cache_seconds: float = 5.0


@dataclass(frozen=True)
class PriceSettings:
    """The background refresh of billing's price list."""

    refresh_seconds: float = 30.0


@dataclass(frozen=True)
class ConversationSettings:
    common: CommonSettings
    agents_address: str
    billing_address: str
    turn: TurnSettings
    retry_policy: RetryPolicy
    relay: RelaySettings
    prices: PriceSettings = field(default_factory=PriceSettings)
    # The VB_PROVIDER_* / VB_SIMULATED_* / VB_OPENAI_* / VB_ANTHROPIC_* / VB_BREAKER_* variables, read by the provider
    # registry and the breakers at start-up.
    provider_env: Mapping[str, str] = field(default_factory=dict)
    # Rate limits and budgets: the counters (Redis) and the failure modes.
    limits: LimitSettings = field(default_factory=LimitSettings)
    # Auth, which says what each tenant's limits are; None: no limits are enforced
    # (from_env always sets it).
    auth_address: str | None = None
    # How long expired idempotency keys and delivered outbox rows are kept (VB_RETENTION_*).
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConversationSettings:
        environ = os.environ if environ is None else environ
        env = Env(environ)
        budget = env.int("VB_CONVERSATION_CONTEXT_TOKENS", 4000)
        if budget < 100:
            raise ConfigError("VB_CONVERSATION_CONTEXT_TOKENS must be at least 100")
        history_cache = env.int("VB_CONVERSATION_HISTORY_CACHE_SESSIONS", TurnSettings.history_cache_sessions)
        if history_cache < 0:
            raise ConfigError("VB_CONVERSATION_HISTORY_CACHE_SESSIONS must not be negative")
        agent_cache = env.float("VB_CONVERSATION_AGENT_CACHE_SECONDS", TurnSettings.agent_cache_seconds)
        if agent_cache < 0:
            raise ConfigError("VB_CONVERSATION_AGENT_CACHE_SECONDS must not be negative")
        price_refresh = env.float("VB_CONVERSATION_PRICE_REFRESH_SECONDS", PriceSettings.refresh_seconds)
        if price_refresh <= 0:
            raise ConfigError("VB_CONVERSATION_PRICE_REFRESH_SECONDS must be positive")
        keys = IdempotencySettings.from_env(env)
        return cls(
            common=CommonSettings.from_env(SERVICE, default_port(SERVICE), env),
            agents_address=env.str("VB_AGENTS_ADDRESS", default_address("agents")),
            billing_address=env.str("VB_BILLING_ADDRESS", default_address("billing")),
            auth_address=env.str("VB_AUTH_ADDRESS", default_address("auth")),
            limits=LimitSettings.from_env(env),
            turn=TurnSettings(
                context_budget_tokens=budget,
                idempotency_lease=keys.lease,
                idempotency_ttl=keys.ttl,
                history_cache_sessions=history_cache,
                agent_cache_seconds=agent_cache,
            ),
            retry_policy=RetryPolicy.from_env(environ),
            relay=RelaySettings.from_env(env),
            retention=RetentionSettings.from_env(env),
            prices=PriceSettings(refresh_seconds=price_refresh),
            provider_env={
                k: v
                for k, v in environ.items()
                if k.startswith(("VB_PROVIDER", "VB_SIMULATED", "VB_OPENAI", "VB_ANTHROPIC", "VB_BREAKER"))
            },
        )
