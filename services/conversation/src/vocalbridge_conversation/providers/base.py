"""The one interface every LLM provider implements, and the registry that holds them.

Adding a provider is one `Provider` subclass plus one `ProviderRegistry.register(...)`
call in `build_registry` (providers/__init__.py). Providers never retry, never sleep
for backoff and never fall back: that is the delivery engine's job (delivery.py).
They make exactly one attempt and either return a `Completion` or raise a
`ProviderError` whose `kind` tells the engine what happened.
"""

from __future__ import annotations

import abc
import enum
import functools
import re
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to a provider."""

    role: Role
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """What to complete. `model` empty means the provider's default model; None
    parameters mean the provider's defaults. `stop`: sequences at which the reply ends
    (the sequence itself left out), as OpenAI's `stop` and Anthropic's `stop_sequences`.
    `user`: the caller's end user, passed on to providers that take one (abuse monitoring)."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    user: str | None = None


@dataclass(frozen=True)
class Completion:
    """A provider's reply and what it consumed. `truncated` is True when the reply
    stopped because it reached `max_output_tokens`."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    truncated: bool = False


@dataclass(frozen=True)
class StreamChunk:
    """A piece of reply text, in order, while streaming."""

    text_delta: str


class FailureKind(enum.Enum):
    """Why a provider attempt failed. The value is the spelling used in configuration
    (`VB_PROVIDER_<NAME>_FAILURE_KIND`)."""

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    AUTHENTICATION = "authentication"
    PROVIDER_ERROR = "provider_error"

    @property
    def retryable(self) -> bool:
        """Whether trying the same provider again can help. A bad request stays bad and
        rejected credentials stay rejected, so those two are never retried."""
        return self not in (FailureKind.BAD_REQUEST, FailureKind.AUTHENTICATION)


class ProviderError(Exception):
    """One provider attempt failed. `retry_after` (seconds) is the provider's own
    hint of when to try again, when it gave one."""

    def __init__(self, kind: FailureKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class Provider(abc.ABC):
    """An LLM endpoint. Each call is exactly one attempt, bounded by `timeout` seconds."""

    name: str

    @abc.abstractmethod
    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        """The whole reply at once. Raises ProviderError."""

    @abc.abstractmethod
    def stream(self, request: CompletionRequest, timeout: float) -> AsyncGenerator[StreamChunk | Completion, None]:
        """The reply as text deltas, then exactly one final Completion carrying the
        full text and the usage. Raises ProviderError, possibly after some deltas."""


class ProviderRegistry:
    """The providers this gateway can call, by name. Built once at start-up."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> None:
        if provider.name in self._providers:
            raise ValueError(f"provider {provider.name!r} is registered twice")
        self._providers[provider.name] = provider

    def get(self, name: str) -> Provider:
        """The provider called `name`; KeyError when there is none."""
        try:
            return self._providers[name]
        except KeyError:
            raise KeyError(f"no provider named {name!r} (configured: {', '.join(self._providers)})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers


# The one tokenizer the gateway uses when it has to count tokens itself (the simulated
# providers, and OpenAI-compatible servers that report no usage): every run of word
# characters is one token and every other non-space character is one token.
# "Hello, world!" → Hello | , | world | !  → 4 tokens. Deterministic, cheap, and in
# the same ballpark as real BPE tokenizers for English prose.
_TOKEN = re.compile(r"\w+|[^\w\s]")


# Counts of the texts seen recently: a conversation's history is counted again at every turn.
# Only short texts are kept, so the cache stays small (at most ~8 MB).
_COUNTED_MAX_CHARS = 2048


@functools.lru_cache(maxsize=4096)
def _count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def count_tokens(text: str) -> int:
    """Tokens in `text` under the gateway's tokenizer (see above)."""
    if len(text) <= _COUNTED_MAX_CHARS:
        return _count_tokens(text)
    return len(_TOKEN.findall(text))


def count_prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    """Prompt tokens of a conversation: the tokens of every message's content."""
    return sum(count_tokens(message.content) for message in messages)


def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    """`text` up to the first occurrence of any of the `stop` sequences (left out), as a
    provider ends its reply there."""
    cut = min((index for index in (text.find(sequence) for sequence in stop if sequence) if index >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def truncate_to_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut after its `max_tokens`-th token, and whether anything was cut."""
    if max_tokens <= 0:
        return "", bool(text.strip())
    for index, match in enumerate(_TOKEN.finditer(text), start=1):
        if index == max_tokens:
            head = text[: match.end()]
            return head, bool(text[match.end() :].strip())
    return text, False


def provider_env_key(name: str) -> str:
    """The `<NAME>` in `VB_PROVIDER_<NAME>_...`: upper case, non-alphanumerics as `_`
    (`vendorA` → `VENDORA`, `my-llm` → `MY_LLM`)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()
