import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.conversation.fakes import FakeTime
from vocalbridge_common.config import ConfigError
from vocalbridge_conversation.delivery import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    RetryPolicy,
    backoff_ceiling,
    backoff_delay,
)

# --- Retry policy and backoff ---------------------------------------------------------------


def test_policy_defaults_and_environment_in_milliseconds():
    assert RetryPolicy.from_env({}) == RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=5.0, attempt_timeout=30.0)
    policy = RetryPolicy.from_env(
        {
            "VB_DELIVERY_MAX_ATTEMPTS": "5",
            "VB_DELIVERY_BACKOFF_BASE_MS": "10",
            "VB_DELIVERY_BACKOFF_CAP_MS": "250",
            "VB_DELIVERY_ATTEMPT_TIMEOUT_MS": "1500",
        }
    )
    assert policy == RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.25, attempt_timeout=1.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VB_DELIVERY_MAX_ATTEMPTS", "0"),
        ("VB_DELIVERY_MAX_ATTEMPTS", "three"),
        ("VB_DELIVERY_BACKOFF_BASE_MS", "-1"),
        ("VB_DELIVERY_BACKOFF_CAP_MS", "-5"),
        ("VB_DELIVERY_ATTEMPT_TIMEOUT_MS", "0"),
    ],
)
def test_bad_policy_configuration_names_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        RetryPolicy.from_env({variable: value})


def test_backoff_ceiling_doubles_per_attempt_up_to_the_cap():
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    assert [backoff_ceiling(n, policy) for n in range(1, 8)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert backoff_ceiling(10_000, policy) == 5.0  # no overflow for absurd attempt numbers


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=60.0),
    seed=st.integers(),
)
def test_full_jitter_stays_between_zero_and_the_capped_exponential(attempt, base, cap, seed):
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt - 1, 1000)) <= cap


def test_full_jitter_spreads_uniformly_over_the_whole_range():
    policy = RetryPolicy(base_delay=0.1, max_delay=5.0)
    rng = random.Random(42)
    samples = [backoff_delay(3, policy, rng) for _ in range(4000)]  # ceiling 0.4
    assert min(samples) < 0.01 and max(samples) > 0.39
    assert statistics.mean(samples) == pytest.approx(0.2, rel=0.05)
    below_half = sum(sample < 0.2 for sample in samples) / len(samples)
    assert below_half == pytest.approx(0.5, abs=0.05)


def test_backoff_is_deterministic_for_a_seeded_generator():
    policy = RetryPolicy()
    first = [backoff_delay(n, policy, random.Random(5)) for n in (1, 2, 3)]
    again = [backoff_delay(n, policy, random.Random(5)) for n in (1, 2, 3)]
    assert first == again


# --- Circuit breaker ------------------------------------------------------------------------


def breaker(time: FakeTime, threshold: int = 3, reset: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_timeout=reset, clock=time.clock)


def test_closed_breaker_allows_and_opens_after_consecutive_failures():
    time = FakeTime()
    b = breaker(time)
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 2
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_a_success_resets_the_consecutive_count():
    b = breaker(FakeTime())
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_release_neither_counts_nor_resets():
    b = breaker(FakeTime())
    b.record_failure()
    b.record_failure()
    b.release()  # e.g. a bad request: no verdict on the provider
    assert b.consecutive_failures == 2 and b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN


def test_open_turns_half_open_after_the_reset_timeout():
    time = FakeTime()
    b = breaker(time, reset=10.0)
    for _ in range(3):
        b.record_failure()
    time.advance(9.999)
    assert b.state is BreakerState.OPEN and not b.allow()
    time.advance(0.001)
    assert b.state is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through_and_success_closes():
    time = FakeTime()
    b = breaker(time)
    for _ in range(3):
        b.record_failure()
    time.advance(10)
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # everyone else sees it as open
    assert b.state is BreakerState.HALF_OPEN
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow() and b.allow()


def test_failed_probe_reopens_for_a_full_reset_timeout():
    time = FakeTime()
    b = breaker(time)
    for _ in range(3):
        b.record_failure()
    time.advance(10)
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    time.advance(9.5)
    assert b.state is BreakerState.OPEN
    time.advance(0.5)
    assert b.state is BreakerState.HALF_OPEN and b.allow()


def test_released_probe_frees_the_slot_for_another_probe():
    time = FakeTime()
    b = breaker(time)
    for _ in range(3):
        b.record_failure()
    time.advance(10)
    assert b.allow()
    assert not b.allow()
    b.release()
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()


def test_failure_reported_while_open_does_not_extend_the_open_period():
    time = FakeTime()
    b = breaker(time)
    for _ in range(3):
        b.record_failure()
    time.advance(6)
    b.record_failure()  # a straggler that started before the breaker opened
    time.advance(4)
    assert b.state is BreakerState.HALF_OPEN


def test_registry_keeps_one_breaker_per_provider():
    time = FakeTime()
    breakers = BreakerRegistry(failure_threshold=1, reset_timeout=1.0, clock=time.clock)
    assert breakers.get("vendorA") is breakers.get("vendorA")
    breakers.get("vendorA").record_failure()
    assert breakers.states() == {"vendorA": BreakerState.OPEN}
    assert breakers.get("vendorB").state is BreakerState.CLOSED


def test_breaker_settings_from_environment():
    breakers = BreakerRegistry.from_env({"VB_BREAKER_FAILURE_THRESHOLD": "2", "VB_BREAKER_RESET_TIMEOUT_MS": "250"})
    assert (breakers.failure_threshold, breakers.reset_timeout) == (2, 0.25)
    defaults = BreakerRegistry.from_env({})
    assert (defaults.failure_threshold, defaults.reset_timeout) == (5, 10.0)
    with pytest.raises(ConfigError, match="VB_BREAKER_FAILURE_THRESHOLD"):
        BreakerRegistry.from_env({"VB_BREAKER_FAILURE_THRESHOLD": "0"})
    with pytest.raises(ConfigError, match="VB_BREAKER_RESET_TIMEOUT_MS"):
        BreakerRegistry.from_env({"VB_BREAKER_RESET_TIMEOUT_MS": "soon"})
