"""LLM providers behind one interface, and the registry built from configuration at start-up."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from vocalbridge_common.config import ConfigError, Env, provider_names
from vocalbridge_conversation.providers.anthropic import AnthropicProvider, AnthropicSettings
from vocalbridge_conversation.providers.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    ProviderRegistry,
    StreamChunk,
    count_prompt_tokens,
    count_tokens,
)
from vocalbridge_conversation.providers.openai_compat import (
    OpenAICompatibleProvider,
    OpenAICompatibleSettings,
)
from vocalbridge_conversation.providers.simulated import SimulatedProvider, SimulatedSettings

__all__ = [
    "AnthropicProvider",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "FailureKind",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "SimulatedProvider",
    "SimulatedSettings",
    "StreamChunk",
    "build_registry",
    "count_prompt_tokens",
    "count_tokens",
]


def build_registry(env: Mapping[str, str], http_client: httpx.AsyncClient) -> ProviderRegistry:
    """The simulated providers (vendorA and vendorB unless VB_SIMULATED_PROVIDERS names others)
    plus every provider listed in VB_OPENAI_PROVIDERS and VB_ANTHROPIC_PROVIDERS. Raises
    ConfigError, naming the variable, when a listed provider is misconfigured."""
    simulated, openai_compatible, anthropic = provider_names(Env(env))
    registry = ProviderRegistry(SimulatedProvider(SimulatedSettings.from_env(name, env)) for name in simulated)
    for name in openai_compatible:
        if name in registry:
            raise ConfigError(f"VB_OPENAI_PROVIDERS names {name!r} twice or reuses a built-in provider's name")
        settings = OpenAICompatibleSettings.from_env(name, env)
        registry.register(OpenAICompatibleProvider.from_settings(settings, http_client))
    for name in anthropic:
        if name in registry:
            raise ConfigError(f"VB_ANTHROPIC_PROVIDERS names {name!r} twice or reuses another provider's name")
        registry.register(AnthropicProvider.from_settings(AnthropicSettings.from_env(name, env), http_client))
    return registry
