import time as real_time

import httpx
import pytest

from tests.unit.conversation.fakes import FakeTime
from vocalbridge_common.config import ConfigError
from vocalbridge_conversation.providers import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    OpenAICompatibleProvider,
    ProviderError,
    ProviderRegistry,
    SimulatedProvider,
    SimulatedSettings,
    StreamChunk,
    build_registry,
    count_prompt_tokens,
    count_tokens,
)
from vocalbridge_conversation.providers.base import provider_env_key, truncate_to_tokens

SEEDED = {"VB_PROVIDER_SEED": "42", "VB_PROVIDER_VENDORA_LATENCY_MS": "0", "VB_PROVIDER_VENDORA_FAILURE_RATE": "0"}


def request(*messages: tuple[str, str], max_tokens: int | None = None, model: str = "") -> CompletionRequest:
    return CompletionRequest(
        model=model,
        messages=tuple(ChatMessage(role, content) for role, content in messages),
        temperature=0.2,
        top_p=None,
        max_output_tokens=max_tokens,
    )


CONVERSATION = request(
    ("system", "You are a cheerful pirate who answers in one short paragraph."),
    ("user", "What is the capital of France?"),
    ("assistant", "Arr, Paris it be."),
    ("user", "And of Spain?"),
)


def simulated(env: dict[str, str] | None = None, name: str = "vendorA", **kwargs) -> SimulatedProvider:
    return SimulatedProvider(SimulatedSettings.from_env(name, {**SEEDED, **(env or {})}), **kwargs)


# --- The tokenizer --------------------------------------------------------------------------


def test_tokenizer_counts_words_and_punctuation():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0 and count_tokens("   \n") == 0
    assert count_tokens("it's 3.5 km") == 7  # it | ' | s | 3 | . | 5 | km
    assert count_prompt_tokens([ChatMessage("system", "a b"), ChatMessage("user", "c!")]) == 4


def test_truncate_to_tokens_cuts_after_the_last_kept_token():
    assert truncate_to_tokens("one, two three", 2) == ("one,", True)
    assert truncate_to_tokens("one two", 2) == ("one two", False)
    assert truncate_to_tokens("one two ", 5) == ("one two ", False)
    assert truncate_to_tokens("one", 0) == ("", True)


def test_provider_env_key():
    assert provider_env_key("vendorA") == "VENDORA"
    assert provider_env_key("my-llm.v2") == "MY_LLM_V2"


# --- Simulated providers --------------------------------------------------------------------


def test_simulated_defaults_vendor_a_is_faster_and_both_rarely_fail():
    a = SimulatedSettings.from_env("vendorA", {})
    b = SimulatedSettings.from_env("vendorB", {})
    assert a.latency < b.latency
    assert (a.latency, b.latency) == (0.02, 0.06)
    assert 0 < a.failure_rate <= 0.05 and 0 < b.failure_rate <= 0.05
    assert a.failure_kind is FailureKind.UNAVAILABLE and a.seed is None
    assert a.model != b.model


def test_simulated_settings_from_environment():
    settings = SimulatedSettings.from_env(
        "vendorB",
        {
            "VB_PROVIDER_VENDORB_LATENCY_MS": "5",
            "VB_PROVIDER_VENDORB_FAILURE_RATE": "0.5",
            "VB_PROVIDER_VENDORB_FAILURE_KIND": "rate_limited",
            "VB_PROVIDER_VENDORB_RETRY_AFTER_MS": "120",
            "VB_PROVIDER_VENDORB_MODEL": "b-2",
            "VB_PROVIDER_SEED": "7",
        },
    )
    assert settings == SimulatedSettings("vendorB", "b-2", 0.005, 0.5, FailureKind.RATE_LIMITED, 0.12, "7")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VB_PROVIDER_VENDORA_FAILURE_KIND", "explode"),
        ("VB_PROVIDER_VENDORA_FAILURE_RATE", "1.5"),
        ("VB_PROVIDER_VENDORA_FAILURE_RATE", "often"),
        ("VB_PROVIDER_VENDORA_LATENCY_MS", "-1"),
        ("VB_PROVIDER_VENDORA_RETRY_AFTER_MS", "-1"),
    ],
)
def test_bad_simulated_settings_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        SimulatedSettings.from_env("vendorA", {variable: value})


async def test_same_seed_same_failures_same_text():
    env = {"VB_PROVIDER_VENDORA_FAILURE_RATE": "0.5"}

    async def run(provider):
        outcomes = []
        for _ in range(40):
            try:
                outcomes.append((await provider.complete(CONVERSATION, timeout=1.0)).text)
            except ProviderError as error:
                outcomes.append(error.kind)
        return outcomes

    first, second = await run(simulated(env)), await run(simulated(env))
    assert first == second
    assert FailureKind.UNAVAILABLE in first and any(isinstance(o, str) for o in first)
    other_seed = await run(simulated({**env, "VB_PROVIDER_SEED": "43"}))
    assert other_seed != first
    vendor_b_env = {"VB_PROVIDER_VENDORB_FAILURE_RATE": "0.5", "VB_PROVIDER_VENDORB_LATENCY_MS": "0"}
    vendor_b = await run(simulated(vendor_b_env, name="vendorB"))
    assert [isinstance(o, str) for o in vendor_b] != [isinstance(o, str) for o in first]  # not in lockstep


async def test_completion_counts_tokens_from_the_text():
    completion = await simulated().complete(CONVERSATION, timeout=1.0)
    assert completion.prompt_tokens == count_prompt_tokens(CONVERSATION.messages) > 0
    assert completion.completion_tokens == count_tokens(completion.text) > 0
    assert completion.model == "vendorA-swift-1" and not completion.truncated
    assert (await simulated().complete(request(("user", "hi"), model="custom-7"), timeout=1.0)).model == "custom-7"


async def test_reply_depends_on_history_and_system_prompt():
    text = (await simulated().complete(CONVERSATION, timeout=1.0)).text
    assert "Turn 2" in text
    assert '"And of Spain?"' in text
    assert "What is the capital of France?" in text
    assert "cheerful pirate" in text
    first_turn = request(("system", "Be terse."), ("user", "What is the capital of France?"))
    other = (await simulated().complete(first_turn, timeout=1.0)).text
    assert "Turn 1" in other and "Be terse" in other and other != text


async def test_same_request_same_text_on_another_instance():
    texts = {(await simulated().complete(CONVERSATION, timeout=1.0)).text for _ in range(3)}
    texts.add((await simulated({"VB_PROVIDER_SEED": "999"}).complete(CONVERSATION, timeout=1.0)).text)
    assert len(texts) == 1


async def test_max_output_tokens_truncates_and_flags_it():
    full = await simulated().complete(CONVERSATION, timeout=1.0)
    cut = await simulated().complete(
        CompletionRequest("", CONVERSATION.messages, None, None, max_output_tokens=5), timeout=1.0
    )
    assert cut.completion_tokens == 5 and cut.truncated
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)
    roomy = await simulated().complete(
        CompletionRequest("", CONVERSATION.messages, None, None, max_output_tokens=full.completion_tokens), timeout=1.0
    )
    assert roomy.text == full.text and not roomy.truncated


@pytest.mark.parametrize(
    ("kind", "retryable", "retry_after"),
    [
        ("unavailable", True, None),
        ("rate_limited", True, 0.05),
        ("bad_request", False, None),
        ("authentication", False, None),
    ],
)
async def test_configured_failure_kinds(kind, retryable, retry_after):
    provider = simulated({"VB_PROVIDER_VENDORA_FAILURE_RATE": "1", "VB_PROVIDER_VENDORA_FAILURE_KIND": kind})
    with pytest.raises(ProviderError) as raised:
        await provider.complete(CONVERSATION, timeout=1.0)
    assert raised.value.kind is FailureKind(kind)
    assert raised.value.kind.retryable is retryable
    assert raised.value.retry_after == retry_after


async def test_timeout_failure_stalls_until_the_given_timeout():
    provider = simulated({"VB_PROVIDER_VENDORA_FAILURE_RATE": "1", "VB_PROVIDER_VENDORA_FAILURE_KIND": "timeout"})
    began = real_time.monotonic()
    with pytest.raises(ProviderError) as raised:
        await provider.complete(CONVERSATION, timeout=0.05)
    elapsed = real_time.monotonic() - began
    assert raised.value.kind is FailureKind.TIMEOUT
    assert 0.045 <= elapsed < 0.5


async def test_latency_longer_than_the_timeout_is_a_timeout_after_the_timeout():
    time = FakeTime()
    provider = simulated({"VB_PROVIDER_VENDORA_LATENCY_MS": "500"}, sleep=time.sleep)
    with pytest.raises(ProviderError) as raised:
        await provider.complete(CONVERSATION, timeout=0.2)
    assert raised.value.kind is FailureKind.TIMEOUT and time.slept == [0.2]


async def test_latency_is_spent_before_replying():
    time = FakeTime()
    await simulated({"VB_PROVIDER_VENDORA_LATENCY_MS": "20"}, sleep=time.sleep).complete(CONVERSATION, timeout=1.0)
    assert time.slept == [0.02]


async def test_stream_yields_word_chunks_then_the_completion():
    time = FakeTime()
    provider = simulated({"VB_PROVIDER_VENDORA_LATENCY_MS": "40"}, sleep=time.sleep)
    events = [event async for event in provider.stream(CONVERSATION, timeout=1.0)]
    chunks, final = events[:-1], events[-1]
    assert len(chunks) >= 5 and all(isinstance(c, StreamChunk) for c in chunks)
    assert isinstance(final, Completion)
    assert "".join(c.text_delta for c in chunks) == final.text == (await simulated().complete(CONVERSATION, 1.0)).text
    assert time.slept[0] == pytest.approx(0.02)  # half the latency to the first token
    assert sum(time.slept) == pytest.approx(0.04)


async def test_stream_failures_happen_before_the_first_delta():
    provider = simulated({"VB_PROVIDER_VENDORA_FAILURE_RATE": "1"})
    events = []
    with pytest.raises(ProviderError):
        async for event in provider.stream(CONVERSATION, timeout=1.0):
            events.append(event)
    assert events == []


async def test_stream_respects_max_output_tokens():
    events = [e async for e in simulated().stream(request(("user", "tell me a story"), max_tokens=3), timeout=1.0)]
    assert events[-1].completion_tokens == 3 and events[-1].truncated
    assert "".join(e.text_delta for e in events[:-1]) == events[-1].text


# --- The registry ---------------------------------------------------------------------------


async def test_build_registry_has_the_simulated_vendors_and_configured_endpoints():
    async with httpx.AsyncClient() as client:
        registry = build_registry(
            {
                "VB_OPENAI_PROVIDERS": "local-llm, openai",
                "VB_PROVIDER_LOCAL_LLM_BASE_URL": "http://127.0.0.1:11434/v1",
                "VB_PROVIDER_OPENAI_BASE_URL": "https://api.openai.com/v1",
                "VB_PROVIDER_OPENAI_API_KEY": "sk-test",
                "VB_PROVIDER_OPENAI_MODEL": "gpt-4o-mini",
            },
            client,
        )
    assert registry.names() == ("vendorA", "vendorB", "local-llm", "openai")
    assert isinstance(registry.get("vendorA"), SimulatedProvider)
    assert isinstance(registry.get("openai"), OpenAICompatibleProvider)
    assert "openai" in registry and "nope" not in registry
    with pytest.raises(KeyError, match="nope"):
        registry.get("nope")


async def test_missing_base_url_fails_at_start_up_naming_the_variable():
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match="VB_PROVIDER_MYLLM_BASE_URL"):
            build_registry({"VB_OPENAI_PROVIDERS": "myllm"}, client)
        with pytest.raises(ConfigError, match="VB_PROVIDER_MYLLM_BASE_URL"):
            build_registry({"VB_OPENAI_PROVIDERS": "myllm", "VB_PROVIDER_MYLLM_BASE_URL": "ftp://x"}, client)
        with pytest.raises(ConfigError, match="vendorA"):
            build_registry({"VB_OPENAI_PROVIDERS": "vendorA", "VB_PROVIDER_VENDORA_BASE_URL": "http://x"}, client)


def test_registry_refuses_duplicate_names():
    provider = simulated()
    with pytest.raises(ValueError, match="twice"):
        ProviderRegistry([provider, provider])


def test_failure_kind_retryability():
    assert {kind for kind in FailureKind if not kind.retryable} == {FailureKind.BAD_REQUEST, FailureKind.AUTHENTICATION}
