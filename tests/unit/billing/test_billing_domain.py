"""Billing's pure logic: event validation, the content digest that tells a
duplicate from a conflict, percentiles, and the page-size rule."""

from __future__ import annotations

import dataclasses
import statistics
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalbridge_billing.domain import (
    AttemptDraft,
    DeliveryDraft,
    Totals,
    UsageEventDraft,
    percentile_cont,
    validate_event,
)
from vocalbridge_billing.service import page_size_or_refuse
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.validation import Violations

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def draft(**changes) -> UsageEventDraft:
    values = dict(
        name="usageEvents/evt-1",
        tenant="tenants/ten_1",
        agent="agents/agt_1",
        agent_version=3,
        session="sessions/ses_1",
        message="sessions/ses_1/messages/msg_1",
        channel="CHANNEL_VOICE",
        provider="vendorA",
        model="",
        prompt_tokens=12,
        completion_tokens=30,
        audio_seconds=1.2345,
        tts_characters=7,
        cost_micros=84,
        price_names=("prices/prc_1",),
        event_time=NOW - timedelta(minutes=1),
        delivery=DeliveryDraft("vendorA", "", False, (AttemptDraft("vendorA", "SUCCESS", 10, 0, ""),), 10),
    )
    values.update(changes)
    return UsageEventDraft(**values)


def validate(event: UsageEventDraft):
    violations = Violations()
    return validate_event(event, "events[0]", NOW, SKEW, violations), {v.field for v in violations}


def test_a_valid_draft_becomes_a_ledger_entry_with_parsed_ids():
    event, fields = validate(draft())
    assert fields == set()
    assert (event.event_id, event.tenant_id, event.agent_id, event.session_id, event.message_id) == (
        "evt-1",
        "ten_1",
        "agt_1",
        "ses_1",
        "msg_1",
    )
    assert event.quantities.audio_millis == 1235
    assert event.price_ids == ("prc_1",)


def test_message_and_delivery_are_optional():
    event, fields = validate(draft(message="", delivery=None))
    assert fields == set() and event.message_id == "" and event.delivery.attempts == ()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "evt-1"}, "name"),
        ({"name": "usageEvents/" + "x" * 129}, "name"),
        ({"tenant": "tenants/"}, "tenant"),
        ({"agent": ""}, "agent"),
        ({"session": "sessions/a/b"}, "session"),
        ({"message": "sessions/ses_2/messages/msg_1"}, "message"),
        ({"message": "messages/msg_1"}, "message"),
        ({"agent_version": 0}, "agent_version"),
        ({"channel": "CHANNEL_UNSPECIFIED"}, "channel"),
        ({"channel": ""}, "channel"),
        ({"provider": " vendorA", "delivery": None}, "provider"),
        ({"model": "m" * 101}, "model"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"tts_characters": 10**9 + 1}, "tts_characters"),
        ({"audio_seconds": float("inf")}, "audio_seconds"),
        ({"audio_seconds": 86_400.5}, "audio_seconds"),
        ({"cost_micros": -5}, "cost_micros"),
        ({"price_names": ("prices/ok", "nope")}, "prices[1].name"),
        ({"event_time": None}, "event_time"),
        ({"event_time": NOW + SKEW + timedelta(seconds=1)}, "event_time"),
        ({"delivery": DeliveryDraft("vendorB", "", False, (), 0)}, "delivery.provider"),
        ({"delivery": DeliveryDraft("vendorA", "", False, (), -1)}, "delivery.latency"),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("", "SUCCESS", 0, 0, ""),), 0)},
            "delivery.attempts[0].provider",
        ),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("vendorA", "", 0, 0, ""),), 0)},
            "delivery.attempts[0].outcome",
        ),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("vendorA", "TIMEOUT", 0, -1, ""),), 0)},
            "delivery.attempts[0].backoff",
        ),
        (
            {"delivery": DeliveryDraft("", "", False, (AttemptDraft("vendorA", "TIMEOUT", 0, 0, ""),) * 51, 0)},
            "delivery.attempts",
        ),
    ],
)
def test_each_problem_is_named_by_its_field(changes, field):
    event, fields = validate(draft(**changes))
    assert event is None
    assert fields == {f"events[0].{field}"}


def test_a_clock_skew_within_the_allowance_is_accepted():
    event, fields = validate(draft(event_time=NOW + SKEW))
    assert fields == set() and event.event_time == NOW + SKEW


def test_the_digest_is_stable_and_sees_every_field():
    base = draft()
    assert base.content_digest() == draft().content_digest()
    # The same instant in another time zone is the same event.
    shifted = draft(event_time=base.event_time.astimezone(timezone(timedelta(hours=2))))
    assert shifted.content_digest() == base.content_digest()
    changed = {
        "prompt_tokens": 13,
        "cost_micros": 85,
        "price_names": (),
        "channel": "CHANNEL_TEXT",
        "model": "x",
        "event_time": base.event_time + timedelta(microseconds=1),
        "tenant": "tenants/ten_2",
        "delivery": dataclasses.replace(base.delivery, fallback_used=True),
    }
    digests = {base.content_digest()}
    for field, value in changed.items():
        digests.add(draft(**{field: value}).content_digest())
    assert len(digests) == len(changed) + 1


def test_percentile_cont_interpolates_like_postgresql():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7], 0.95) == 7
    assert percentile_cont([100, 200], 0.5) == 150
    assert percentile_cont([100, 200], 0.95) == pytest.approx(195)
    assert percentile_cont([150, 250, 400], 0.95) == pytest.approx(385)
    assert percentile_cont([1, 2, 3, 4], 0.5) == 2.5


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=200))
def test_percentile_cont_agrees_with_the_inclusive_quantile_method(values):
    values.sort()
    expected = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile_cont(values, 0.5) == pytest.approx(statistics.median(values))
    assert percentile_cont(values, 0.95) == pytest.approx(expected[94])


def test_totals_add_field_by_field():
    assert Totals(1, 2, 3, 4, 5, 6) + Totals(10, 20, 30, 40, 50, 60) == Totals(11, 22, 33, 44, 55, 66)


@pytest.mark.parametrize(("asked", "used"), [(0, 50), (1, 1), (1000, 1000)])
def test_page_sizes_in_range(asked, used):
    assert page_size_or_refuse(asked) == used


@pytest.mark.parametrize("asked", [-1, 1001, 2**31 - 1])
def test_page_sizes_out_of_range_are_refused_not_clamped(asked):
    with pytest.raises(InvalidArgument) as caught:
        page_size_or_refuse(asked)
    assert caught.value.reason == "INVALID_PAGE_SIZE"
    assert [v.field for v in caught.value.field_violations] == ["page_size"]
