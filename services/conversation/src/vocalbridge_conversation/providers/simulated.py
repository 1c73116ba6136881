"""`vendorA` / `vendorB`: built-in simulated LLM providers (DESIGN §7).

They behave like a remote model without a network: a configurable latency, a
configurable rate and kind of failure, deterministic under a seed, token counts
from the text. Replies visibly depend on the conversation (they quote the last
user message and the one before it, give the turn number, and quote the start of
the system prompt), so tests can see that history and instructions reached the
provider. The same request always gets the same text; only the failure draws use
the provider's random generator.

Configuration (`<NAME>` = `VENDORA`, `VENDORB`; see `provider_env_key`):
  VB_PROVIDER_<NAME>_LATENCY_MS       time to the whole reply (default vendorA 20, vendorB 60)
  VB_PROVIDER_<NAME>_FAILURE_RATE     0…1, probability an attempt fails (default 0.01)
  VB_PROVIDER_<NAME>_FAILURE_KIND     unavailable | timeout | rate_limited | bad_request
                                      (also authentication | provider_error; default unavailable)
  VB_PROVIDER_<NAME>_RETRY_AFTER_MS   retry-after carried by rate_limited failures (default 50)
  VB_PROVIDER_<NAME>_MODEL            model reported when the request names none
  VB_PROVIDER_SEED                    seeds every simulated provider (each its own generator);
                                      unset → seeded from the OS, not reproducible
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from vocalbridge_common.config import ConfigError, Env
from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    StreamChunk,
    count_prompt_tokens,
    count_tokens,
    cut_at_stop,
    provider_env_key,
    truncate_to_tokens,
)

# name → (latency ms, default model). vendorA is the fast, cheap one (its price lives in billing).
_DEFAULTS: dict[str, tuple[float, str]] = {
    "vendorA": (20.0, "vendorA-swift-1"),
    "vendorB": (60.0, "vendorB-sage-1"),
}
_OTHER_DEFAULT_LATENCY_MS = 40.0
DEFAULT_FAILURE_RATE = 0.01
DEFAULT_RETRY_AFTER_MS = 50.0

# Closing sentences, one picked per request from a hash of the request: varied but deterministic.
_CLOSINGS = (
    "Here is my answer, as clearly as I can put it.",
    "Let me know if you would like more detail on any part.",
    "I hope that helps; happy to go further.",
    "That is the short version; ask me for the long one.",
    "Thanks for the question, it is a good one.",
)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SimulatedSettings:
    """One simulated provider's behaviour. Durations in seconds."""

    name: str
    model: str
    latency: float
    failure_rate: float
    failure_kind: FailureKind
    retry_after: float
    seed: str | None
    # The first N calls fail (with failure_kind) whatever the rate: a provider that is
    # down at start and then recovers, deterministically.
    fail_first: int = 0

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> SimulatedSettings:
        read = Env(env)
        prefix = f"VB_PROVIDER_{provider_env_key(name)}_"
        latency_ms, model = _DEFAULTS.get(name, (_OTHER_DEFAULT_LATENCY_MS, f"{name}-sim-1"))
        latency_ms = read.float(prefix + "LATENCY_MS", latency_ms)
        if latency_ms < 0:
            raise ConfigError(f"{prefix}LATENCY_MS must not be negative, got {latency_ms}")
        failure_rate = read.float(prefix + "FAILURE_RATE", DEFAULT_FAILURE_RATE)
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigError(f"{prefix}FAILURE_RATE must be between 0 and 1, got {failure_rate}")
        kind_name = read.str(prefix + "FAILURE_KIND", FailureKind.UNAVAILABLE.value).lower()
        try:
            failure_kind = FailureKind(kind_name)
        except ValueError:
            allowed = ", ".join(kind.value for kind in FailureKind)
            raise ConfigError(f"{prefix}FAILURE_KIND must be one of {allowed}, got {kind_name!r}") from None
        retry_after_ms = read.float(prefix + "RETRY_AFTER_MS", DEFAULT_RETRY_AFTER_MS)
        if retry_after_ms < 0:
            raise ConfigError(f"{prefix}RETRY_AFTER_MS must not be negative, got {retry_after_ms}")
        return cls(
            name=name,
            model=read.str(prefix + "MODEL", model),
            latency=latency_ms / 1000.0,
            failure_rate=failure_rate,
            failure_kind=failure_kind,
            retry_after=retry_after_ms / 1000.0,
            seed=read.optional("VB_PROVIDER_SEED"),
            fail_first=read.int(prefix + "FAIL_FIRST", 0),
        )


class SimulatedProvider(Provider):
    """A deterministic stand-in for a remote LLM. `sleep` is injectable for tests."""

    def __init__(self, settings: SimulatedSettings, *, sleep: Sleep = asyncio.sleep) -> None:
        self.name = settings.name
        self.settings = settings
        self._sleep = sleep
        # One generator per provider instance, seeded with the provider's name too so
        # vendorA and vendorB do not fail in lockstep under the same seed.
        self._rng = random.Random(f"{settings.seed}/{settings.name}") if settings.seed is not None else random.Random()
        self._calls = 0

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        await self._maybe_fail(timeout)
        completion = self._reply(request)
        await self._wait(self.settings.latency, timeout)
        return completion

    async def stream(
        self, request: CompletionRequest, timeout: float
    ) -> AsyncGenerator[StreamChunk | Completion, None]:
        # Failures happen before the first delta (a refused or throttled call).
        await self._maybe_fail(timeout)
        completion = self._reply(request)
        if self.settings.latency > timeout:
            await self._wait(self.settings.latency, timeout)  # raises TIMEOUT after `timeout`
        chunks = _word_chunks(completion.text)
        # Half the latency before the first token, the other half spread over the chunks.
        first_token = self.settings.latency / 2
        per_chunk = (self.settings.latency - first_token) / max(len(chunks), 1)
        await self._sleep(first_token)
        for chunk in chunks:
            yield StreamChunk(chunk)
            await self._sleep(per_chunk)
        yield completion

    async def _maybe_fail(self, timeout: float) -> None:
        self._calls += 1
        scheduled = self._calls <= self.settings.fail_first
        if not scheduled and self._rng.random() >= self.settings.failure_rate:
            return
        kind = self.settings.failure_kind
        if kind is FailureKind.TIMEOUT:
            # Stall for real until the caller gives up, so deadlines are exercised.
            await self._sleep(timeout)
            raise ProviderError(kind, f"{self.name} did not answer within {timeout:.3f}s (simulated)")
        retry_after = self.settings.retry_after if kind is FailureKind.RATE_LIMITED else None
        raise ProviderError(kind, f"{self.name} simulated failure: {kind.value}", retry_after=retry_after)

    async def _wait(self, latency: float, timeout: float) -> None:
        if latency > timeout:
            await self._sleep(timeout)
            raise ProviderError(
                FailureKind.TIMEOUT, f"{self.name} did not answer within {timeout:.3f}s (latency {latency:.3f}s)"
            )
        await self._sleep(latency)

    def _reply(self, request: CompletionRequest) -> Completion:
        text, truncated = cut_at_stop(compose_reply(self.name, request), request.stop), False
        if request.max_output_tokens is not None:
            text, truncated = truncate_to_tokens(text, request.max_output_tokens)
        return Completion(
            text=text,
            prompt_tokens=count_prompt_tokens(request.messages),
            completion_tokens=count_tokens(text),
            model=request.model or self.settings.model,
            truncated=truncated,
        )


def compose_reply(provider: str, request: CompletionRequest) -> str:
    """The simulated reply: a pure function of the provider's name and the request."""
    users = [message.content for message in request.messages if message.role == "user"]
    system = next((message.content for message in request.messages if message.role == "system"), "")
    parts = [f"[{provider}] Turn {len(users)}."]
    if users:
        parts.append(f'You said: "{_excerpt(users[-1], 40)}".')
    if len(users) > 1:
        parts.append(f'Before that you said: "{_excerpt(users[-2], 12)}".')
    if system.strip():
        parts.append(f'My instructions begin: "{_excerpt(system, 8)}".')
    digest = hashlib.sha256(repr((provider, request.messages)).encode()).digest()
    parts.append(_CLOSINGS[digest[0] % len(_CLOSINGS)])
    return " ".join(parts)


def _excerpt(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")


def _word_chunks(text: str, words_per_chunk: int = 2) -> list[str]:
    """`text` in pieces of a few words; joined back they give `text` exactly."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(pieces[i : i + words_per_chunk]) for i in range(0, len(pieces), words_per_chunk)]
