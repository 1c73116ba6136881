"""Reliable delivery of one turn to an LLM provider (DESIGN §4 "Reliable delivery").

The engine tries the agent's primary provider up to `max_attempts` times, waiting an
exponential backoff with full jitter between attempts, then the fallback provider the
same way, and records every attempt. It is pure: the clock, the sleep and the random
generator are injected, so tests run instantly and deterministically.

Decisions, in one place:

* Backoff before retry n (n = the number of the attempt that just failed, 1-based) is
  uniform(0, min(max_delay, base_delay * 2**(n-1))) — "full jitter" (AWS Architecture
  Blog, "Exponential Backoff And Jitter").
* A provider's retry-after is a floor, not a replacement: the wait is
  max(retry_after, jittered backoff). It never retries earlier than the provider
  asked, and callers told the same retry-after still spread out. A retry-after longer
  than `max_delay` means "not now": the engine stops retrying that provider and moves
  to the fallback instead of parking the turn.
* Non-retryable failures are never retried on the same provider. BAD_REQUEST is the
  request's fault, so the fallback is not tried either (it would reject it too, and
  we would pay for the attempt); the turn fails at once. AUTHENTICATION is this
  gateway's credentials for that one provider, so the fallback is tried.
* The breaker counts only retryable failures (unavailable, timeout, rate limited,
  provider error). Bad requests and rejected credentials say nothing about whether
  the provider is up, and a tenant sending bad requests must not be able to open the
  breaker for every other tenant. They neither count nor reset the count.
* Deadlines: `deadline` is an absolute `clock()` time. Each attempt's timeout is
  min(attempt_timeout, deadline - now). The engine never sleeps past the deadline:
  when the next backoff would end at or after it, or no time is left, it records one
  DEADLINE_EXCEEDED attempt and stops — the fallback is not tried either (the caller
  has stopped waiting). A timeout caused by the deadline (rather than by
  attempt_timeout) is recorded as DEADLINE_EXCEEDED, and does not count against the
  breaker: the caller's short deadline is not the provider's failure.
* An open breaker is recorded as one CIRCUIT_OPEN attempt (latency 0) and the engine
  moves to the fallback without calling the provider. The breaker is consulted before
  every attempt, so retries stop as soon as it opens.
* A provider name missing from the registry (a configuration mismatch) is recorded
  as one UNAVAILABLE attempt naming the problem, and the fallback is tried.
* Streaming follows the same rules. A stream that fails before its first delta is
  retried silently; one that fails after some deltas is followed, right before the
  next provider call actually starts, by `Restart()` (discard the partial text). When
  nothing further is attempted no Restart is sent: `Done` with `completion=None`
  already says the partial text is void. The attempt timeout bounds the provider's
  own awaits, not the time the consumer spends handling deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from vocalbridge_common import metrics
from vocalbridge_common.config import ConfigError, Env
from vocalbridge_common.validation import storable
from vocalbridge_common.vocabulary import AttemptOutcome
from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    ProviderRegistry,
    StreamChunk,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# What a failed attempt is recorded as, by why it failed.
_FAILURE_OUTCOMES: Mapping[FailureKind, AttemptOutcome] = {
    FailureKind.UNAVAILABLE: AttemptOutcome.UNAVAILABLE,
    FailureKind.TIMEOUT: AttemptOutcome.TIMEOUT,
    FailureKind.RATE_LIMITED: AttemptOutcome.RATE_LIMITED,
    FailureKind.BAD_REQUEST: AttemptOutcome.BAD_REQUEST,
    FailureKind.AUTHENTICATION: AttemptOutcome.AUTHENTICATION_FAILED,
    FailureKind.PROVIDER_ERROR: AttemptOutcome.PROVIDER_ERROR,
}


def outcome_of_failure(kind: FailureKind) -> AttemptOutcome:
    return _FAILURE_OUTCOMES[kind]


# --- Retry policy and backoff -------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per provider and the backoff between them. Durations in seconds."""

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    attempt_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigError("backoff delays must not be negative")
        if self.attempt_timeout <= 0:
            raise ConfigError(f"attempt_timeout must be positive, got {self.attempt_timeout}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        """From VB_DELIVERY_MAX_ATTEMPTS, VB_DELIVERY_BACKOFF_BASE_MS,
        VB_DELIVERY_BACKOFF_CAP_MS and VB_DELIVERY_ATTEMPT_TIMEOUT_MS."""
        read = Env(env)
        max_attempts = read.int("VB_DELIVERY_MAX_ATTEMPTS", cls.max_attempts)
        delays_ms = {
            "VB_DELIVERY_BACKOFF_BASE_MS": read.float("VB_DELIVERY_BACKOFF_BASE_MS", cls.base_delay * 1000),
            "VB_DELIVERY_BACKOFF_CAP_MS": read.float("VB_DELIVERY_BACKOFF_CAP_MS", cls.max_delay * 1000),
        }
        attempt_timeout_ms = read.float("VB_DELIVERY_ATTEMPT_TIMEOUT_MS", cls.attempt_timeout * 1000)
        if max_attempts < 1:
            raise ConfigError("VB_DELIVERY_MAX_ATTEMPTS must be at least 1")
        for name, value in delays_ms.items():
            if value < 0:
                raise ConfigError(f"{name} must not be negative")
        if attempt_timeout_ms <= 0:
            raise ConfigError("VB_DELIVERY_ATTEMPT_TIMEOUT_MS must be positive")
        return cls(
            max_attempts=max_attempts,
            base_delay=delays_ms["VB_DELIVERY_BACKOFF_BASE_MS"] / 1000,
            max_delay=delays_ms["VB_DELIVERY_BACKOFF_CAP_MS"] / 1000,
            attempt_timeout=attempt_timeout_ms / 1000,
        )


def backoff_ceiling(attempt_number: int, policy: RetryPolicy) -> float:
    """The largest backoff after failed attempt `attempt_number` (1-based):
    min(max_delay, base_delay * 2**(attempt_number-1))."""
    exponent = min(max(attempt_number - 1, 0), 1000)  # 2.0**1000 is finite; beyond that the cap wins anyway
    return min(policy.max_delay, policy.base_delay * 2.0**exponent)


def backoff_delay(attempt_number: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff after failed attempt `attempt_number` (1-based)."""
    return rng.uniform(0.0, backoff_ceiling(attempt_number, policy))


# --- Circuit breaker ----------------------------------------------------------------------


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Metrics: every attempt, and each breaker's state as it changes (per process; a scrape of
# several workers shows the worst).
ATTEMPTS = metrics.counter(
    "delivery_attempts",
    "Provider calls made for turns (and circuit-open skips), by provider and outcome.",
    ("provider", "outcome"),
)
BREAKER_STATE = metrics.gauge(
    "breaker_state", "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open.", ("provider",)
)
_STATE_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class CircuitBreaker:
    """One provider's breaker. CLOSED → OPEN after `failure_threshold` consecutive
    retryable failures; OPEN → HALF_OPEN once `reset_timeout` has passed; HALF_OPEN lets
    exactly one probe through at a time (other callers see it as open); the probe's
    success closes it, its failure opens it again for another `reset_timeout`.

    Callers ask `allow()` before a call and then report exactly one of
    `record_success()`, `record_failure()` (a retryable failure) or `release()` (the
    call ended without a verdict on the provider's health: a non-retryable error, the
    caller's deadline, cancellation). State lives in this object, per process.
    """

    def __init__(
        self, failure_threshold: int = 5, reset_timeout: float = 10.0, clock: Clock = time.monotonic, name: str = ""
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout = reset_timeout
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._gauge = BREAKER_STATE.labels(name)
        self._gauge.set(0.0)

    @property
    def state(self) -> BreakerState:
        self._refresh()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go to the provider now. In HALF_OPEN, True claims the
        single probe slot until the call's outcome is reported."""
        self._refresh()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            logger.info("circuit breaker closed", extra={"provider": self.name})
            self._gauge.set(_STATE_VALUES[BreakerState.CLOSED])
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self) -> None:
        self._refresh()
        if self._state is BreakerState.HALF_OPEN:
            self._trip()  # the probe failed
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._threshold:
                self._trip()
        # OPEN: a call that began before the breaker opened; it is open already.

    def release(self) -> None:
        """The allowed call ended without a verdict; free the probe slot if it held it."""
        self._probing = False

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._reset_timeout:
            self._state = BreakerState.HALF_OPEN
            self._probing = False
            self._gauge.set(_STATE_VALUES[BreakerState.HALF_OPEN])

    def _trip(self) -> None:
        logger.warning("circuit breaker opened", extra={"provider": self.name})
        self._state = BreakerState.OPEN
        self._gauge.set(_STATE_VALUES[BreakerState.OPEN])
        self._opened_at = self._clock()
        self._failures = 0
        self._probing = False


class BreakerRegistry:
    """One circuit breaker per provider name, created on first use."""

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 10.0, clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ConfigError(f"breaker failure threshold must be at least 1, got {failure_threshold}")
        if reset_timeout < 0:
            raise ConfigError(f"breaker reset timeout must not be negative, got {reset_timeout}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, clock: Clock = time.monotonic) -> BreakerRegistry:
        """From VB_BREAKER_FAILURE_THRESHOLD (default 5) and VB_BREAKER_RESET_TIMEOUT_MS (default 10000)."""
        read = Env(env)
        threshold = read.int("VB_BREAKER_FAILURE_THRESHOLD", 5)
        if threshold < 1:
            raise ConfigError("VB_BREAKER_FAILURE_THRESHOLD must be at least 1")
        reset_ms = read.float("VB_BREAKER_RESET_TIMEOUT_MS", 10_000)
        if reset_ms < 0:
            raise ConfigError("VB_BREAKER_RESET_TIMEOUT_MS must not be negative")
        return cls(failure_threshold=threshold, reset_timeout=reset_ms / 1000, clock=clock)

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(self.failure_threshold, self.reset_timeout, self._clock, name)
            self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {name: breaker.state for name, breaker in self._breakers.items()}


# --- Results and stream events ------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt, as reported in the Delivery record. Durations in seconds; `backoff`
    is the wait before this attempt."""

    provider: str
    outcome: AttemptOutcome
    latency: float
    backoff: float
    error_message: str = ""


@dataclass(frozen=True)
class DeliveryResult:
    """How a turn was delivered. `completion` is None when every attempt failed; then
    `provider` and `model` are empty."""

    completion: Completion | None
    provider: str
    model: str
    fallback_used: bool
    attempts: tuple[AttemptRecord, ...]
    latency: float

    @property
    def final_outcome(self) -> AttemptOutcome | None:
        """The last attempt's outcome (why the turn failed, when it did)."""
        return self.attempts[-1].outcome if self.attempts else None


@dataclass(frozen=True)
class Delta:
    """Reply text to append, and the provider producing it."""

    text: str
    provider: str = ""


@dataclass(frozen=True)
class Restart:
    """An attempt failed after sending deltas and another attempt starts now: discard
    every delta received so far."""


@dataclass(frozen=True)
class Done:
    """The end of the stream: the delivery record, with the full reply on success."""

    result: DeliveryResult


StreamEvent = Delta | Restart | Done


# --- The engine ---------------------------------------------------------------------------


class DeliveryEngine:
    """Delivers turns per the rules in this module's docstring. `clock` must be the clock
    the breakers use and the one `deadline` values are expressed in (time.monotonic in
    production: deadline = time.monotonic() + context.time_remaining())."""

    def __init__(
        self,
        registry: ProviderRegistry,
        policy: RetryPolicy,
        breakers: BreakerRegistry,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._breakers = breakers
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()

    async def deliver(
        self, request: CompletionRequest, primary: str, fallback: str | None = None, deadline: float | None = None
    ) -> DeliveryResult:
        """The whole reply, or a result with `completion=None` when every attempt failed."""
        async with contextlib.aclosing(self._run(request, primary, fallback, deadline, streaming=False)) as events:
            async for event in events:
                if isinstance(event, Done):
                    return event.result
        raise AssertionError("delivery ended without a result")  # pragma: no cover

    def deliver_stream(
        self, request: CompletionRequest, primary: str, fallback: str | None = None, deadline: float | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Delta…, possibly Restart then Delta… again, and finally exactly one Done.
        Close the iterator (aclose) to abandon the turn; the provider call is closed too."""
        return self._run(request, primary, fallback, deadline, streaming=True)

    async def _run(
        self,
        request: CompletionRequest,
        primary: str,
        fallback: str | None,
        deadline: float | None,
        *,
        streaming: bool,
    ) -> AsyncGenerator[StreamEvent, None]:
        started = self._clock()
        attempts: list[AttemptRecord] = []
        sent_deltas = False  # deltas sent since the start or the last Restart

        def record(
            name: str, outcome: AttemptOutcome, latency: float = 0.0, backoff: float = 0.0, message: str = ""
        ) -> None:
            # A provider's words are stored and billed as they are, except what no backend can store.
            attempts.append(AttemptRecord(name, outcome, latency, backoff, storable(message)))
            ATTEMPTS.labels(name, outcome.value).inc()

        def done(completion: Completion | None = None, provider: str = "", fallback_used: bool = False) -> Done:
            return Done(
                DeliveryResult(
                    completion=completion,
                    provider=provider if completion else "",
                    model=completion.model if completion else "",
                    fallback_used=fallback_used,
                    attempts=tuple(attempts),
                    latency=self._clock() - started,
                )
            )

        names = [primary] + ([fallback] if fallback and fallback != primary else [])
        for position, name in enumerate(names):
            if name not in self._registry:
                record(name, AttemptOutcome.UNAVAILABLE, message=f"provider {name!r} is not configured on this gateway")
                continue
            provider = self._registry.get(name)
            breaker = self._breakers.get(name)
            last_error: ProviderError | None = None
            for number in range(1, self._policy.max_attempts + 1):
                backoff = 0.0
                if number > 1:
                    backoff = self._retry_wait(number - 1, last_error)
                    if deadline is not None and self._clock() + backoff >= deadline:
                        message = f"a retry after {backoff:.3f}s backoff would start after the caller's deadline"
                        record(name, AttemptOutcome.DEADLINE_EXCEEDED, message=message)
                        yield done()
                        return
                    if backoff > 0:
                        await self._sleep(backoff)
                if not breaker.allow():
                    record(
                        name,
                        AttemptOutcome.CIRCUIT_OPEN,
                        backoff=backoff,
                        message=f"circuit breaker for {name} is open",
                    )
                    break
                timeout, deadline_bound = self._policy.attempt_timeout, False
                if deadline is not None:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        breaker.release()
                        message = "the caller's deadline has passed"
                        record(name, AttemptOutcome.DEADLINE_EXCEEDED, backoff=backoff, message=message)
                        yield done()
                        return
                    if remaining < timeout:
                        timeout, deadline_bound = remaining, True
                if sent_deltas:
                    yield Restart()
                    sent_deltas = False

                began = self._clock()
                completion: Completion | None = None
                error: ProviderError | None = None
                try:
                    if streaming:
                        async with contextlib.aclosing(_bounded_stream(provider, request, timeout)) as events:
                            async for event in events:
                                if isinstance(event, Completion):
                                    completion = event
                                else:
                                    sent_deltas = True
                                    yield Delta(storable(event.text_delta), name)
                    else:
                        async with asyncio.timeout(timeout):
                            completion = await provider.complete(request, timeout)
                except ProviderError as failure:
                    error = failure
                except TimeoutError:
                    error = ProviderError(FailureKind.TIMEOUT, f"{name} did not answer within {timeout:.3f}s")
                except Exception as unexpected:  # a provider bug must not take the turn down with it
                    logger.exception("provider %s raised an unexpected error", name)
                    error = ProviderError(FailureKind.PROVIDER_ERROR, f"{name} failed: {type(unexpected).__name__}")
                except BaseException:  # cancelled, or the consumer closed the stream
                    breaker.release()
                    raise
                latency = self._clock() - began

                if completion is not None:
                    completion = replace(completion, text=storable(completion.text), model=storable(completion.model))
                    breaker.record_success()
                    record(name, AttemptOutcome.SUCCESS, latency, backoff)
                    yield done(completion, name, fallback_used=position > 0)
                    return
                assert error is not None
                if error.kind is FailureKind.TIMEOUT and deadline_bound:
                    breaker.release()
                    message = "the caller's deadline expired during the attempt"
                    record(name, AttemptOutcome.DEADLINE_EXCEEDED, latency, backoff, message)
                    yield done()
                    return
                if error.kind.retryable:
                    breaker.record_failure()
                else:
                    breaker.release()
                record(name, outcome_of_failure(error.kind), latency, backoff, error.message)
                if error.kind is FailureKind.BAD_REQUEST:
                    yield done()
                    return
                if not error.kind.retryable:
                    break
                if error.retry_after is not None and error.retry_after > self._policy.max_delay:
                    break  # the provider asks for longer than we ever back off: use the fallback now
                last_error = error
        yield done()

    def _retry_wait(self, failed_attempt: int, error: ProviderError | None) -> float:
        jittered = backoff_delay(failed_attempt, self._policy, self._rng)
        if error is not None and error.retry_after is not None:
            return max(error.retry_after, jittered)
        return jittered


async def _bounded_stream(
    provider: Provider, request: CompletionRequest, timeout: float
) -> AsyncGenerator[StreamChunk | Completion, None]:
    """The provider's stream with the attempt's timeout enforced, ending at its Completion.
    The timeout covers the provider's awaits only, never the consumer's code that runs
    while this generator is suspended at a yield."""
    ends_at = asyncio.get_running_loop().time() + timeout
    async with contextlib.aclosing(provider.stream(request, timeout)) as events:
        while True:
            try:
                async with asyncio.timeout_at(ends_at):
                    event = await anext(events)
            except StopAsyncIteration:
                message = f"{provider.name} ended its stream without a final completion"
                raise ProviderError(FailureKind.PROVIDER_ERROR, message) from None
            if isinstance(event, Completion):
                yield event
                return
            if event.text_delta:
                yield event
