import asyncio
import random
import time as real_time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.conversation.fakes import REQUEST, FakeTime, MaxRandom, ScriptedProvider, Stall, fail, make_engine
from vocalbridge_common.vocabulary import AttemptOutcome
from vocalbridge_conversation.delivery import (
    BreakerRegistry,
    BreakerState,
    DeliveryEngine,
    RetryPolicy,
    outcome_of_failure,
)
from vocalbridge_conversation.providers.base import FailureKind, ProviderRegistry

U = fail(FailureKind.UNAVAILABLE)


def outcomes(result):
    return [(attempt.provider, attempt.outcome) for attempt in result.attempts]


async def test_success_on_the_first_attempt():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", ["Hi there"], time, latency=0.02)
    engine, _breakers = make_engine(time, primary, ScriptedProvider("vendorB", ["unused"], time))

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)

    assert result.completion.text == "Hi there"
    assert (result.provider, result.model, result.fallback_used) == ("vendorA", "vendorA-m1", False)
    assert outcomes(result) == [("vendorA", AttemptOutcome.SUCCESS)]
    attempt = result.attempts[0]
    assert (attempt.latency, attempt.backoff, attempt.error_message) == (pytest.approx(0.02), 0.0, "")
    assert result.latency == pytest.approx(0.02)
    assert time.slept == []
    assert result.final_outcome is AttemptOutcome.SUCCESS


async def test_retries_are_recorded_with_their_backoff_then_success():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U, fail(FailureKind.TIMEOUT), "ok"], time)
    engine, breakers = make_engine(time, primary, policy=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0))

    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)

    assert outcomes(result) == [
        ("vendorA", AttemptOutcome.UNAVAILABLE),
        ("vendorA", AttemptOutcome.TIMEOUT),
        ("vendorA", AttemptOutcome.SUCCESS),
    ]
    backoffs = [attempt.backoff for attempt in result.attempts]
    assert backoffs[0] == 0.0
    assert 0.0 <= backoffs[1] <= 0.1 and 0.0 <= backoffs[2] <= 0.2
    assert time.slept == [b for b in backoffs[1:] if b > 0]
    assert result.attempts[0].error_message == "scripted unavailable"
    assert result.latency == pytest.approx(sum(backoffs) + 3 * 0.01)
    assert breakers.get("vendorA").consecutive_failures == 0  # the success reset it


async def test_fallback_after_the_primary_fails_every_attempt():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U], time)
    fallback = ScriptedProvider("vendorB", ["from B"], time)
    engine, _ = make_engine(time, primary, fallback)

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)

    assert outcomes(result) == [("vendorA", AttemptOutcome.UNAVAILABLE)] * 3 + [("vendorB", AttemptOutcome.SUCCESS)]
    assert (result.provider, result.model, result.fallback_used) == ("vendorB", "vendorB-m1", True)
    assert result.completion.text == "from B"
    assert result.attempts[3].backoff == 0.0  # a provider's first attempt never waits
    assert len(primary.calls) == 3 and len(fallback.calls) == 1


async def test_every_attempt_failing_gives_no_completion():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorA", [U], time), ScriptedProvider("vendorB", [U], time))

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)

    assert result.completion is None
    assert (result.provider, result.model, result.fallback_used) == ("", "", False)
    assert [a.provider for a in result.attempts] == ["vendorA"] * 3 + ["vendorB"] * 3
    assert result.final_outcome is AttemptOutcome.UNAVAILABLE


@pytest.mark.parametrize("kind", [FailureKind.RATE_LIMITED, FailureKind.PROVIDER_ERROR, FailureKind.TIMEOUT])
async def test_retryable_failures_are_retried(kind):
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(kind), "ok"], time)
    engine, _ = make_engine(time, primary)
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert [a.outcome for a in result.attempts] == [outcome_of_failure(kind), AttemptOutcome.SUCCESS]


async def test_authentication_failure_is_not_retried_but_falls_back():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.AUTHENTICATION)], time)
    engine, breakers = make_engine(time, primary, ScriptedProvider("vendorB", ["ok"], time))

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)

    assert outcomes(result) == [("vendorA", AttemptOutcome.AUTHENTICATION_FAILED), ("vendorB", AttemptOutcome.SUCCESS)]
    assert len(primary.calls) == 1 and time.slept == []
    assert breakers.get("vendorA").consecutive_failures == 0


async def test_bad_request_is_neither_retried_nor_sent_to_the_fallback():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.BAD_REQUEST)], time)
    fallback = ScriptedProvider("vendorB", ["ok"], time)
    engine, _ = make_engine(time, primary, fallback)

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)

    assert outcomes(result) == [("vendorA", AttemptOutcome.BAD_REQUEST)]
    assert result.completion is None and result.final_outcome is AttemptOutcome.BAD_REQUEST
    assert len(primary.calls) == 1 and fallback.calls == []


async def test_non_retryable_failures_do_not_open_the_breaker():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.BAD_REQUEST)], time)
    engine, breakers = make_engine(time, primary, threshold=2)
    for _ in range(5):
        await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert breakers.get("vendorA").state is BreakerState.CLOSED
    assert len(primary.calls) == 5


async def test_open_breaker_skips_the_primary_until_a_probe_succeeds():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U], time)
    fallback = ScriptedProvider("vendorB", ["from B"], time)
    engine, breakers = make_engine(time, primary, fallback, threshold=3, reset_timeout=10.0)

    # Turn 1: three failures reach the threshold; the fallback serves the turn.
    first = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
    assert [a.outcome for a in first.attempts] == [AttemptOutcome.UNAVAILABLE] * 3 + [AttemptOutcome.SUCCESS]
    assert breakers.get("vendorA").state is BreakerState.OPEN

    # Turns while open: one CIRCUIT_OPEN record, the primary is never called.
    for _ in range(3):
        result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
        assert outcomes(result) == [("vendorA", AttemptOutcome.CIRCUIT_OPEN), ("vendorB", AttemptOutcome.SUCCESS)]
        assert (result.attempts[0].latency, result.attempts[0].backoff) == (0.0, 0.0)
        assert result.attempts[0].error_message
        assert result.fallback_used
    assert len(primary.calls) == 3

    # After the reset timeout a failing probe re-opens it at once: the retry is skipped.
    time.advance(10.0)
    probe_failed = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
    assert outcomes(probe_failed) == [
        ("vendorA", AttemptOutcome.UNAVAILABLE),
        ("vendorA", AttemptOutcome.CIRCUIT_OPEN),
        ("vendorB", AttemptOutcome.SUCCESS),
    ]
    assert len(primary.calls) == 4

    # The provider recovers; after another reset timeout the probe succeeds and closes it.
    primary.script[:] = ["A is back"]
    time.advance(10.0)
    recovered = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
    assert outcomes(recovered) == [("vendorA", AttemptOutcome.SUCCESS)]
    assert breakers.get("vendorA").state is BreakerState.CLOSED


async def test_both_breakers_open_means_no_provider_is_called():
    time = FakeTime()
    a, b = ScriptedProvider("vendorA", ["x"], time), ScriptedProvider("vendorB", ["y"], time)
    engine, breakers = make_engine(time, a, b, threshold=1)
    breakers.get("vendorA").record_failure()
    breakers.get("vendorB").record_failure()
    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
    assert outcomes(result) == [("vendorA", AttemptOutcome.CIRCUIT_OPEN), ("vendorB", AttemptOutcome.CIRCUIT_OPEN)]
    assert result.completion is None and a.calls == [] and b.calls == []


async def test_deadline_shorter_than_the_backoff_stops_without_sleeping():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U], time, latency=0.01)
    fallback = ScriptedProvider("vendorB", ["ok"], time)
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=1.0)
    engine, _ = make_engine(time, primary, fallback, policy=policy, rng=MaxRandom())
    start = time.now

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=start + 0.5)

    assert outcomes(result) == [("vendorA", AttemptOutcome.UNAVAILABLE), ("vendorA", AttemptOutcome.DEADLINE_EXCEEDED)]
    assert result.attempts[1].backoff == 0.0 and "deadline" in result.attempts[1].error_message
    assert time.slept == []
    assert fallback.calls == []  # the caller has stopped waiting: nothing further is attempted
    assert result.completion is None and result.final_outcome is AttemptOutcome.DEADLINE_EXCEEDED
    assert time.now <= start + 0.5


async def test_attempt_timeout_is_cut_to_the_time_left_before_the_deadline():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U, "ok"], time, latency=0.5)
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, attempt_timeout=2.0)
    engine, _ = make_engine(time, primary, policy=policy)

    result = await engine.deliver(REQUEST, "vendorA", None, deadline=time.now + 2.2)

    assert primary.calls == [2.0, pytest.approx(1.7)]
    assert result.completion.text == "ok"


async def test_timeout_caused_by_the_deadline_is_deadline_exceeded_and_not_held_against_the_provider():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Stall()], time)
    fallback = ScriptedProvider("vendorB", ["ok"], time)
    engine, breakers = make_engine(time, primary, fallback, threshold=1)
    start = time.now

    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=start + 0.3)

    assert outcomes(result) == [("vendorA", AttemptOutcome.DEADLINE_EXCEEDED)]
    assert result.attempts[0].latency == pytest.approx(0.3)
    assert fallback.calls == []
    assert breakers.get("vendorA").state is BreakerState.CLOSED


async def test_timeout_within_the_attempt_timeout_is_a_retryable_timeout():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Stall(), "ok"], time)
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, attempt_timeout=1.0)
    engine, _ = make_engine(time, primary, policy=policy)
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=time.now + 60)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.TIMEOUT, AttemptOutcome.SUCCESS]


async def test_deadline_already_passed_records_one_attempt_and_calls_nobody():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", ["ok"], time)
    engine, breakers = make_engine(time, primary, threshold=1)
    breakers.get("vendorA").record_failure()
    time.advance(10)  # half-open: the deadline check must hand the probe slot back
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=time.now)
    assert outcomes(result) == [("vendorA", AttemptOutcome.DEADLINE_EXCEEDED)]
    assert primary.calls == []
    assert breakers.get("vendorA").allow()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    budget=st.floats(min_value=0.001, max_value=3.0),
    latency=st.floats(min_value=0.0, max_value=0.5),
)
def test_never_sleeps_or_runs_past_the_deadline(seed, budget, latency):
    async def scenario():
        time = FakeTime()
        primary = ScriptedProvider("vendorA", [U], time, latency=latency)
        fallback = ScriptedProvider("vendorB", [U], time, latency=latency)
        policy = RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=1.0, attempt_timeout=10.0)
        engine, _ = make_engine(time, primary, fallback, policy=policy, rng=random.Random(seed))
        start = time.now
        result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=start + budget)
        return time, start, result

    time, start, result = asyncio.run(scenario())
    assert sum(time.slept) < budget
    assert time.now <= start + budget + 1e-9  # neither a backoff nor an attempt ran past the deadline
    assert result.completion is None
    assert result.attempts[-1].outcome in (AttemptOutcome.DEADLINE_EXCEEDED, AttemptOutcome.UNAVAILABLE)
    assert all(a.outcome in (AttemptOutcome.UNAVAILABLE, AttemptOutcome.TIMEOUT) for a in result.attempts[:-1])


async def test_retry_after_is_a_floor_for_the_wait():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.RATE_LIMITED, retry_after=0.5), "ok"], time)
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0)
    engine, _ = make_engine(time, primary, policy=policy)

    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)

    assert time.slept == [0.5]
    assert [(a.outcome, a.backoff) for a in result.attempts] == [
        (AttemptOutcome.RATE_LIMITED, 0.0),
        (AttemptOutcome.SUCCESS, 0.5),
    ]


async def test_jittered_backoff_longer_than_retry_after_wins():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.RATE_LIMITED, retry_after=0.05), "ok"], time)
    policy = RetryPolicy(max_attempts=3, base_delay=0.3, max_delay=1.0)
    engine, _ = make_engine(time, primary, policy=policy, rng=MaxRandom())
    await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert time.slept == [0.3]


async def test_retry_after_longer_than_the_backoff_cap_goes_to_the_fallback_at_once():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.RATE_LIMITED, retry_after=60.0)], time)
    engine, _ = make_engine(time, primary, ScriptedProvider("vendorB", ["ok"], time))
    result = await engine.deliver(REQUEST, "vendorA", "vendorB", deadline=None)
    assert outcomes(result) == [("vendorA", AttemptOutcome.RATE_LIMITED), ("vendorB", AttemptOutcome.SUCCESS)]
    assert time.slept == []


async def test_retry_after_past_the_deadline_stops():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [fail(FailureKind.RATE_LIMITED, retry_after=0.8)], time)
    engine, _ = make_engine(time, primary)
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=time.now + 0.5)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.RATE_LIMITED, AttemptOutcome.DEADLINE_EXCEEDED]
    assert time.slept == []


async def test_unknown_provider_is_recorded_and_the_fallback_serves():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorB", ["ok"], time))
    result = await engine.deliver(REQUEST, "vendorZ", "vendorB", deadline=None)
    assert outcomes(result) == [("vendorZ", AttemptOutcome.UNAVAILABLE), ("vendorB", AttemptOutcome.SUCCESS)]
    assert "not configured" in result.attempts[0].error_message


async def test_same_fallback_as_primary_is_not_tried_twice():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U], time)
    engine, _ = make_engine(time, primary)
    result = await engine.deliver(REQUEST, "vendorA", "vendorA", deadline=None)
    assert len(result.attempts) == 3


async def test_unexpected_exception_from_a_provider_is_a_retryable_provider_error():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [U, "ok"], time)

    async def broken(request, timeout):
        primary.calls.append(timeout)
        if len(primary.calls) == 1:
            raise ZeroDivisionError("bug")
        return primary._completion("ok")

    primary.complete = broken
    engine, _ = make_engine(time, primary)
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.PROVIDER_ERROR, AttemptOutcome.SUCCESS]
    assert result.attempts[0].error_message == "vendorA failed: ZeroDivisionError"


async def test_engine_enforces_the_attempt_timeout_on_a_provider_that_ignores_it():
    class Hanging(ScriptedProvider):
        async def complete(self, request, timeout):
            self.calls.append(timeout)
            await asyncio.sleep(3600)

    provider = Hanging("vendorA", [], FakeTime())
    engine = DeliveryEngine(
        ProviderRegistry([provider]),
        RetryPolicy(max_attempts=1, attempt_timeout=0.05),
        BreakerRegistry(),
    )
    began = real_time.monotonic()
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert real_time.monotonic() - began < 1.0
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.TIMEOUT]
    assert result.attempts[0].latency >= 0.04


async def test_cancelled_delivery_hands_back_the_probe_slot():
    class Hanging(ScriptedProvider):
        async def complete(self, request, timeout):
            await asyncio.sleep(3600)

    time = FakeTime()
    provider = Hanging("vendorA", [], time)
    engine, breakers = make_engine(time, provider, threshold=1)
    breakers.get("vendorA").record_failure()
    time.advance(10)
    task = asyncio.create_task(engine.deliver(REQUEST, "vendorA", None, deadline=None))
    await asyncio.sleep(0.01)
    assert not breakers.get("vendorA").allow()  # the task holds the probe
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breakers.get("vendorA").allow()


def test_every_failure_kind_is_recorded_as_a_failed_outcome():
    # The outcome names themselves are the shared vocabulary's (tested with the proto enum there).
    recorded = {kind: outcome_of_failure(kind) for kind in FailureKind}
    assert all(outcome.is_failure for outcome in recorded.values())
    assert recorded[FailureKind.AUTHENTICATION] is AttemptOutcome.AUTHENTICATION_FAILED
    assert len(set(recorded.values())) == len(FailureKind)  # no two kinds look alike in a delivery record


async def test_a_providers_unstorable_characters_are_replaced_one_for_one():
    """PostgreSQL cannot store NUL (nor any backend a lone surrogate): a reply or an error message
    carrying one would fail its write after the provider had answered. Each becomes U+FFFD."""
    from vocalbridge_conversation.providers.base import ProviderError

    time = FakeTime()
    nasty = ProviderError(FailureKind.UNAVAILABLE, "upstream said \x00 and \ud800")
    primary = ScriptedProvider("vendorA", [nasty, "poem\x00please \udfff"], time)
    engine, _ = make_engine(time, primary, policy=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0))

    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)

    assert result.completion.text == "poem\ufffdplease \ufffd"
    assert len(result.completion.text) == len("poem\x00please \udfff")
    assert result.attempts[0].error_message == "upstream said \ufffd and \ufffd"


async def test_a_clean_reply_is_left_as_it_is():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorA", ["héllo ‮ 🎉"], time))
    assert (await engine.deliver(REQUEST, "vendorA", None, deadline=None)).completion.text == "héllo ‮ 🎉"
