"""The Anthropic provider's pure parts: how a gateway conversation becomes Anthropic's
`system` + alternating `messages`, and how the provider is configured by name."""

import httpx
import pytest

from vocalbridge_agents.domain import AgentConfig, validate_config
from vocalbridge_common.config import CommonSettings, ConfigError, Env, provider_names
from vocalbridge_conversation.config import ConversationSettings
from vocalbridge_conversation.providers import (
    AnthropicProvider,
    ChatMessage,
    OpenAICompatibleProvider,
    SimulatedProvider,
    build_registry,
)
from vocalbridge_conversation.providers.anthropic import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_TOKENS,
    OPENING_USER_TURN,
    AnthropicSettings,
    anthropic_messages,
)

SECRET = "unit-test-identity-secret-0123456789abcdef"


def conversation(*messages: tuple[str, str]) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage(role, content) for role, content in messages)


# --- Reshaping the conversation -------------------------------------------------------------


def test_the_system_prompt_goes_to_the_system_field_and_turns_alternate():
    system, messages = anthropic_messages(
        conversation(
            ("system", "Be brief."),
            ("user", "What is 2+2?"),
            ("assistant", "4."),
            ("user", "And 3+3?"),
        )
    )
    assert system == "Be brief."
    assert messages == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ]


def test_consecutive_messages_of_one_role_are_merged_in_order():
    system, messages = anthropic_messages(
        conversation(
            ("user", "first"),
            ("user", "second"),
            ("assistant", "reply one"),
            ("assistant", "reply two"),
            ("user", "third"),
        )
    )
    assert system == ""
    assert messages == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "reply one\n\nreply two"},
        {"role": "user", "content": "third"},
    ]


def test_every_system_message_is_lifted_out_and_empty_messages_are_left_out():
    system, messages = anthropic_messages(
        conversation(
            ("system", "Rule one."),
            ("user", "hi"),
            ("assistant", "   "),  # would split nothing, and Anthropic refuses empty content
            ("system", "Rule two."),
            ("user", "there"),
        )
    )
    assert system == "Rule one.\n\nRule two."
    assert messages == [{"role": "user", "content": "hi\n\nthere"}]


def test_a_history_that_starts_with_the_assistant_gets_a_user_turn_first():
    _system, messages = anthropic_messages(
        conversation(("system", "s"), ("assistant", "Hello, I am the bank's assistant."), ("user", "Balance?"))
    )
    assert messages == [
        {"role": "user", "content": OPENING_USER_TURN},
        {"role": "assistant", "content": "Hello, I am the bank's assistant."},
        {"role": "user", "content": "Balance?"},
    ]
    assert anthropic_messages(conversation(("system", "only a system prompt"))) == ("only a system prompt", [])


# --- Configuration by name ------------------------------------------------------------------


def test_settings_from_the_environment_with_defaults():
    settings = AnthropicSettings.from_env("claude", {"VB_PROVIDER_CLAUDE_API_KEY": "sk-ant-test"})
    assert settings == AnthropicSettings("claude", DEFAULT_BASE_URL, "sk-ant-test", "", DEFAULT_MAX_TOKENS)
    settings = AnthropicSettings.from_env(
        "claude-eu",
        {
            "VB_PROVIDER_CLAUDE_EU_API_KEY": "k",
            "VB_PROVIDER_CLAUDE_EU_BASE_URL": "http://127.0.0.1:8080",
            "VB_PROVIDER_CLAUDE_EU_MODEL": "claude-sonnet-4-5",
            "VB_PROVIDER_CLAUDE_EU_MAX_TOKENS": "512",
        },
    )
    assert (settings.base_url, settings.default_model, settings.default_max_tokens) == (
        "http://127.0.0.1:8080",
        "claude-sonnet-4-5",
        512,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "VB_PROVIDER_CLAUDE_API_KEY"),
        ({"VB_PROVIDER_CLAUDE_API_KEY": "k", "VB_PROVIDER_CLAUDE_BASE_URL": "api.anthropic.com"}, "_BASE_URL"),
        ({"VB_PROVIDER_CLAUDE_API_KEY": "k", "VB_PROVIDER_CLAUDE_MAX_TOKENS": "0"}, "VB_PROVIDER_CLAUDE_MAX_TOKENS"),
        ({"VB_PROVIDER_CLAUDE_API_KEY": "k", "VB_PROVIDER_CLAUDE_MAX_TOKENS": "lots"}, "VB_PROVIDER_CLAUDE_MAX_TOKENS"),
    ],
)
async def test_a_misconfigured_provider_fails_at_start_up_naming_the_variable(env, variable):
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match=variable):
            build_registry({"VB_ANTHROPIC_PROVIDERS": "claude", **env}, client)


async def test_the_registry_holds_anthropic_providers_beside_the_others():
    async with httpx.AsyncClient() as client:
        registry = build_registry(
            {
                "VB_OPENAI_PROVIDERS": "openai",
                "VB_PROVIDER_OPENAI_BASE_URL": "https://api.openai.com/v1",
                "VB_ANTHROPIC_PROVIDERS": "claude, claude-fast",
                "VB_PROVIDER_CLAUDE_API_KEY": "k1",
                "VB_PROVIDER_CLAUDE_FAST_API_KEY": "k2",
            },
            client,
        )
    assert registry.names() == ("vendorA", "vendorB", "openai", "claude", "claude-fast")
    assert isinstance(registry.get("vendorA"), SimulatedProvider)
    assert isinstance(registry.get("openai"), OpenAICompatibleProvider)
    assert isinstance(registry.get("claude"), AnthropicProvider)
    assert isinstance(registry.get("claude-fast"), AnthropicProvider)


@pytest.mark.parametrize(
    "env",
    [
        {"VB_ANTHROPIC_PROVIDERS": "vendorA"},
        {"VB_ANTHROPIC_PROVIDERS": "x", "VB_OPENAI_PROVIDERS": "x", "VB_PROVIDER_X_BASE_URL": "http://127.0.0.1:1"},
        {"VB_ANTHROPIC_PROVIDERS": "x,x"},
    ],
)
async def test_an_anthropic_name_that_is_taken_fails_at_start_up(env):
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match="VB_ANTHROPIC_PROVIDERS"):
            build_registry({"VB_PROVIDER_X_API_KEY": "k", "VB_PROVIDER_VENDORA_API_KEY": "k", **env}, client)


def test_every_service_knows_the_anthropic_names_so_agents_accepts_them():
    env = {"VB_IDENTITY_SECRET": SECRET, "VB_ANTHROPIC_PROVIDERS": "claude"}
    assert provider_names(Env(env)) == (("vendorA", "vendorB"), (), ("claude",))
    known = CommonSettings.from_env("agents", 50052, Env(env)).known_providers
    assert known == ("vendorA", "vendorB", "claude")
    config = AgentConfig(display_name="Claude first", primary_provider="claude", fallback_provider="vendorA")
    assert list(validate_config(config, known_providers=known, max_system_prompt_chars=100)) == []
    unknown = AgentConfig(display_name="x", primary_provider="claude-typo")
    assert [v.field for v in validate_config(unknown, known_providers=known, max_system_prompt_chars=100)] == [
        "agent.primary_provider"
    ]


async def test_conversation_passes_the_anthropic_variables_to_its_registry():
    settings = ConversationSettings.from_env(
        {"VB_IDENTITY_SECRET": SECRET, "VB_ANTHROPIC_PROVIDERS": "claude", "VB_PROVIDER_CLAUDE_API_KEY": "k"}
    )
    async with httpx.AsyncClient() as client:
        registry = build_registry(settings.provider_env, client)
    assert isinstance(registry.get("claude"), AnthropicProvider)
