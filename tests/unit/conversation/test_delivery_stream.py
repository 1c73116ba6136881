import asyncio

import pytest

from tests.unit.conversation.fakes import (
    REQUEST,
    FakeTime,
    NoFinal,
    Partial,
    ScriptedProvider,
    Stall,
    fail,
    make_engine,
)
from vocalbridge_common.vocabulary import AttemptOutcome
from vocalbridge_conversation.delivery import (
    BreakerRegistry,
    BreakerState,
    DeliveryEngine,
    Delta,
    Done,
    Restart,
    RetryPolicy,
)
from vocalbridge_conversation.providers.base import FailureKind, ProviderRegistry, StreamChunk

U = fail(FailureKind.UNAVAILABLE)


async def collect(stream):
    return [event async for event in stream]


def shape(events):
    """Deltas as their text, Restart as "↺", Done as "done"."""
    return [e.text if isinstance(e, Delta) else "↺" if isinstance(e, Restart) else "done" for e in events]


async def test_stream_sends_deltas_then_done_with_the_full_reply():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorA", ["one two three"], time))

    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))

    assert shape(events) == ["one ", "two ", "three ", "done"]
    result = events[-1].result
    assert result.completion.text == "one two three"
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.SUCCESS]
    assert result.provider == "vendorA" and not result.fallback_used


async def test_failure_before_the_first_delta_needs_no_restart():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorA", [U, "hi"], time))
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))
    assert shape(events) == ["hi ", "done"]
    assert [a.outcome for a in events[-1].result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]


async def test_mid_stream_failure_restarts_with_the_next_attempt():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Partial(["Hel", "lo "], U), "Hello world"], time)
    engine, _ = make_engine(time, primary)

    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))

    assert shape(events) == ["Hel", "lo ", "↺", "Hello ", "world ", "done"]
    result = events[-1].result
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]
    assert result.attempts[1].backoff == time.slept[0]
    assert primary.closed_streams == 2


async def test_mid_stream_failure_restarts_on_the_fallback():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Partial(["partial "], fail(FailureKind.AUTHENTICATION))], time)
    fallback = ScriptedProvider("vendorB", ["from B"], time)
    engine, _ = make_engine(time, primary, fallback)

    events = await collect(engine.deliver_stream(REQUEST, "vendorA", "vendorB", deadline=None))

    assert shape(events) == ["partial ", "↺", "from ", "B ", "done"]
    result = events[-1].result
    assert result.fallback_used and result.provider == "vendorB"
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("vendorA", AttemptOutcome.AUTHENTICATION_FAILED),
        ("vendorB", AttemptOutcome.SUCCESS),
    ]


async def test_mid_stream_failure_with_nothing_left_to_try_ends_without_restart():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Partial(["half "], fail(FailureKind.BAD_REQUEST))], time)
    engine, _ = make_engine(time, primary, ScriptedProvider("vendorB", ["unused"], time))
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", "vendorB", deadline=None))
    assert shape(events) == ["half ", "done"]
    assert events[-1].result.completion is None


async def test_several_mid_stream_failures_restart_each_time():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Partial(["a "], U), Partial(["b "], U), "c"], time)
    engine, _ = make_engine(time, primary)
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))
    assert shape(events) == ["a ", "↺", "b ", "↺", "c ", "done"]


async def test_stream_ending_without_a_completion_is_a_provider_error():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [NoFinal(["cut "]), "whole"], time)
    engine, _ = make_engine(time, primary)
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))
    assert shape(events) == ["cut ", "↺", "whole ", "done"]
    first = events[-1].result.attempts[0]
    assert first.outcome is AttemptOutcome.PROVIDER_ERROR and "without a final completion" in first.error_message


async def test_stream_obeys_breaker_and_deadline_rules():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Stall()], time)
    fallback = ScriptedProvider("vendorB", ["ok"], time)
    engine, breakers = make_engine(time, primary, fallback, threshold=1)
    breakers.get("vendorB").record_failure()  # fallback open

    events = await collect(engine.deliver_stream(REQUEST, "vendorA", "vendorB", deadline=time.now + 60))
    result = events[-1].result
    # Stall → TIMEOUT (attempt_timeout 5 < 60 left), which opens vendorA's breaker (threshold 1).
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("vendorA", AttemptOutcome.TIMEOUT),
        ("vendorA", AttemptOutcome.CIRCUIT_OPEN),
        ("vendorB", AttemptOutcome.CIRCUIT_OPEN),
    ]
    assert shape(events) == ["done"]


async def test_closing_the_stream_early_closes_the_provider_stream_and_frees_the_probe():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", ["many words in this reply"], time)
    engine, breakers = make_engine(time, primary, threshold=1)
    breakers.get("vendorA").record_failure()
    time.advance(10)  # half-open: this turn is the probe

    stream = engine.deliver_stream(REQUEST, "vendorA", None, deadline=None)
    assert await anext(stream) == Delta("many ", "vendorA")
    assert not breakers.get("vendorA").allow()
    await stream.aclose()

    assert primary.closed_streams == 1
    assert breakers.get("vendorA").state is BreakerState.HALF_OPEN
    assert breakers.get("vendorA").allow()


async def test_stream_timeout_is_enforced_between_deltas():
    class SlowStream(ScriptedProvider):
        async def stream(self, request, timeout):
            self.calls.append(timeout)
            yield StreamChunk("first ")
            await asyncio.sleep(3600)

    provider = SlowStream("vendorA", [], FakeTime())
    engine = DeliveryEngine(
        ProviderRegistry([provider]), RetryPolicy(max_attempts=1, attempt_timeout=0.05), BreakerRegistry()
    )

    events = await asyncio.wait_for(collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None)), 2)

    assert shape(events) == ["first ", "done"]
    assert [a.outcome for a in events[-1].result.attempts] == [AttemptOutcome.TIMEOUT]


async def test_consumer_time_between_deltas_does_not_count_against_the_attempt():
    class TwoChunks(ScriptedProvider):
        async def stream(self, request, timeout):
            yield StreamChunk("a ")
            yield StreamChunk("b ")
            yield self._completion("a b")

    provider = TwoChunks("vendorA", [], FakeTime())
    engine = DeliveryEngine(
        ProviderRegistry([provider]), RetryPolicy(max_attempts=1, attempt_timeout=0.05), BreakerRegistry()
    )
    events = []
    async for event in engine.deliver_stream(REQUEST, "vendorA", None, deadline=None):
        events.append(event)
        if isinstance(event, Delta):
            await asyncio.sleep(0.03)  # a slow client; total 0.06 s > attempt timeout
    assert isinstance(events[-1], Done) and events[-1].result.completion.text == "a b"


async def test_non_streaming_delivery_of_a_partial_failure_sees_only_the_error():
    time = FakeTime()
    primary = ScriptedProvider("vendorA", [Partial(["x"], U), "ok"], time)
    engine, _ = make_engine(time, primary)
    result = await engine.deliver(REQUEST, "vendorA", None, deadline=None)
    assert [a.outcome for a in result.attempts] == [AttemptOutcome.UNAVAILABLE, AttemptOutcome.SUCCESS]


@pytest.mark.parametrize("deadline_offset", [0.0, -1.0])
async def test_stream_with_no_time_left_calls_nobody(deadline_offset):
    time = FakeTime()
    primary = ScriptedProvider("vendorA", ["ok"], time)
    engine, _ = make_engine(time, primary)
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=time.now + deadline_offset))
    assert shape(events) == ["done"]
    assert [a.outcome for a in events[-1].result.attempts] == [AttemptOutcome.DEADLINE_EXCEEDED]
    assert primary.calls == []


async def test_streamed_deltas_carry_no_unstorable_character():
    time = FakeTime()
    engine, _ = make_engine(time, ScriptedProvider("vendorA", ["a\x00b c\ud800"], time))
    events = await collect(engine.deliver_stream(REQUEST, "vendorA", None, deadline=None))
    assert shape(events) == ["a\ufffdb ", "c\ufffd ", "done"]
    assert events[-1].result.completion.text == "a\ufffdb c\ufffd"
