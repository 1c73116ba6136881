"""The one check of stored text: every string of a request, wherever it sits in the message."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool

from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2
from vocalbridge.billing.v1 import billing_service_pb2, usage_event_pb2
from vocalbridge.conversation.v1 import conversation_service_pb2, delivery_pb2, session_pb2
from vocalbridge.voice.v1 import voice_service_pb2  # noqa: F401 - its fields are in TEXT_LIMITS
from vocalbridge_common import validation
from vocalbridge_common.validation import Violations, request_violations, text_problem


def _fields(message) -> dict[str, str]:
    return {v.field: v.description for v in request_violations(message)}


def test_every_declared_limit_names_a_real_string_field():
    pool = descriptor_pool.Default()
    for name in validation.TEXT_LIMITS:
        field = pool.FindFieldByName(name)
        assert field.type == field.TYPE_STRING, name


def test_a_misspelt_declaration_would_be_caught():
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFieldByName("vocalbridge.agents.v1.Agent.system_promt")


def test_nested_repeated_and_map_strings_are_all_walked():
    request = billing_service_pb2.RecordUsageRequest(
        events=[
            usage_event_pb2.UsageEvent(name="usageEvents/ok"),
            usage_event_pb2.UsageEvent(
                name="usageEvents/x",
                model="m\x00",
                delivery=delivery_pb2.Delivery(attempts=[delivery_pb2.Attempt(error_message="e\x00")]),
            ),
        ]
    )
    assert set(_fields(request)) == {"events[1].model", "events[1].delivery.attempts[0].error_message"}
    session = conversation_service_pb2.CreateSessionRequest(
        session=session_pb2.Session(external_user_id="u\x00", metadata={"k": "v\x00", "ok": "fine"})
    )
    assert set(_fields(session)) == {"session.external_user_id", "session.metadata['k']"}


def test_lengths_default_and_declared():
    assert _fields(agents_service_pb2.ListAgentsRequest(page_token="t" * 2048)) == {}
    assert "at most 2048" in _fields(agents_service_pb2.ListAgentsRequest(page_token="t" * 2049))["page_token"]
    long_prompt = agents_service_pb2.CreateAgentRequest(agent=agent_pb2.Agent(system_prompt="p" * 100_000))
    assert _fields(long_prompt) == {}
    long_name = agents_service_pb2.CreateAgentRequest(agent=agent_pb2.Agent(display_name="p" * 100_000))
    assert set(_fields(long_name)) == {"agent.display_name"}


def test_clean_text_passes_and_other_packages_are_not_walked():
    assert _fields(conversation_service_pb2.SendMessageRequest(session="sessions/a", content="héllo ‮ 🎉")) == {}
    from grpc_health.v1 import health_pb2

    assert request_violations(health_pb2.HealthCheckRequest(service="a\x00")) == []


def test_text_that_arrives_outside_protobuf_strings_is_checked_the_same_way():
    violations = Violations()
    violations.text("messages[0].content", "lone \ud800 surrogate", maximum=100)
    violations.text("messages[1].content", "nul \x00", maximum=100)
    violations.text("messages[2].content", "fine", maximum=100)
    violations.text("messages[3].content", "long", maximum=3)
    assert [v.field for v in violations] == ["messages[0].content", "messages[1].content", "messages[3].content"]
    assert text_problem("fine", 4) is None


def test_times_out_of_their_protos_range_are_violations():
    from google.protobuf import duration_pb2, timestamp_pb2

    from vocalbridge.billing.v1 import billing_service_pb2 as billing

    in_range = usage_event_pb2.UsageEvent(
        event_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        delivery=delivery_pb2.Delivery(latency=duration_pb2.Duration(seconds=5, nanos=1)),
    )
    assert _fields(billing.RecordUsageRequest(events=[in_range])) == {}
    far = usage_event_pb2.UsageEvent(
        event_time=timestamp_pb2.Timestamp(seconds=2**62),
        delivery=delivery_pb2.Delivery(
            latency=duration_pb2.Duration(seconds=2**62),
            attempts=[delivery_pb2.Attempt(backoff=duration_pb2.Duration(seconds=1, nanos=-5))],
        ),
    )
    assert set(_fields(billing.RecordUsageRequest(events=[far]))) == {
        "events[0].event_time",
        "events[0].delivery.latency",
        "events[0].delivery.attempts[0].backoff",
    }


def _with_bad_utf8(message, marker: str) -> bytes:
    """`message` serialized with `marker` (a string value in it) replaced by bytes that are not UTF-8."""
    data = message.SerializeToString()
    assert data.count(marker.encode()) == 1
    return data.replace(marker.encode(), b"\xff" * len(marker))


def test_the_field_that_is_not_utf8_is_named():
    from google.protobuf.message import DecodeError

    from vocalbridge_common.validation import undecodable_fields

    cases = [
        (conversation_service_pb2.SendMessageRequest(session="sessions/a", content="MARK"), "content"),
        (
            conversation_service_pb2.CreateSessionRequest(session=session_pb2.Session(external_user_id="MARK")),
            "session.external_user_id",
        ),
        (
            billing_service_pb2.RecordUsageRequest(
                events=[usage_event_pb2.UsageEvent(model="a"), usage_event_pb2.UsageEvent(model="MARK")]
            ),
            "events[1].model",
        ),
        (
            conversation_service_pb2.CreateSessionRequest(session=session_pb2.Session(metadata={"k": "MARK"})),
            "session.metadata[0].value",
        ),
    ]
    for message, field in cases:
        data = _with_bad_utf8(message, "MARK")
        with pytest.raises(DecodeError):  # the parser refuses it without naming the field
            type(message).FromString(data)
        assert [v.field for v in undecodable_fields(message.DESCRIPTOR, data)] == [field]
    # Bytes that are no message at all name nothing (the caller names the body instead).
    for garbage in (b"\x12\x7fshort", b"\xff" * 11, b"\x0b\x0c"):
        assert undecodable_fields(conversation_service_pb2.SendMessageRequest.DESCRIPTOR, garbage) == []


def test_storable_replaces_one_for_one_and_leaves_clean_text_alone():
    from vocalbridge_common.validation import storable

    assert storable("a\x00b\ud800c\udfff") == "a\ufffdb\ufffdc\ufffd"
    clean = "héllo ‮ 🎉"
    assert storable(clean) is clean
