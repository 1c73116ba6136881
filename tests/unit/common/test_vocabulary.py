"""The shared vocabulary matches the protobuf enums it stands for, value for value."""

from vocalbridge.conversation.v1 import delivery_pb2, session_pb2
from vocalbridge_common.vocabulary import AttemptOutcome, Channel


def test_every_channel_round_trips_through_its_proto_value():
    for channel in Channel:
        assert Channel.from_proto(channel.to_proto()) is channel
    assert {c.value for c in Channel} == set(session_pb2.Channel.keys()) - {"CHANNEL_UNSPECIFIED"}
    assert Channel.from_proto(session_pb2.CHANNEL_UNSPECIFIED, default=Channel.TEXT) is Channel.TEXT
    assert Channel.from_proto(99) is None


def test_every_attempt_outcome_round_trips_through_its_proto_value():
    for outcome in AttemptOutcome:
        assert AttemptOutcome.from_proto(outcome.to_proto()) is outcome
    proto_names = {n.removeprefix("ATTEMPT_OUTCOME_") for n in delivery_pb2.AttemptOutcome.keys()}  # noqa: SIM118
    assert {o.value for o in AttemptOutcome} == proto_names - {"UNSPECIFIED"}
    assert AttemptOutcome.from_proto(delivery_pb2.ATTEMPT_OUTCOME_UNSPECIFIED) is None
    assert not AttemptOutcome.SUCCESS.is_failure and not AttemptOutcome.CIRCUIT_OPEN.is_failure
    assert AttemptOutcome.TIMEOUT.is_failure
