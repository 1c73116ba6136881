"""What a new session may be, and what a turn may ask: every violation reported at once."""

from __future__ import annotations

import pytest

from vocalbridge_common.errors import AgentNotFound, InvalidArgument
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.domain.sessions import NewSession, validate_new_session
from vocalbridge_conversation.domain.turns import TurnRequest, VoiceInput, validate_turn

AGENT = "agents/agt_01m87srx2qrnbdce06p98dr0wk"


def violations(error: InvalidArgument) -> set[str]:
    return {violation.field for violation in error.field_violations}


def test_a_valid_session_names_its_agent_and_channel():
    assert validate_new_session(NewSession(AGENT)) == ("agt_01m87srx2qrnbdce06p98dr0wk", Channel.TEXT)
    assert validate_new_session(NewSession(AGENT, Channel.VOICE))[1] is Channel.VOICE


def test_every_bad_field_is_reported_at_once():
    new = NewSession(
        agent="",
        channel=None,  # a channel number this version does not know
        external_user_id="u" * 201,
        metadata={"": "empty key", "long": "v" * 513},
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_new_session(new)
    assert violations(caught.value) == {
        "session.agent",
        "session.channel",
        "session.external_user_id",
        "session.metadata[]",
        "session.metadata[long]",
    }


def test_too_many_metadata_entries_are_refused():
    with pytest.raises(InvalidArgument) as caught:
        validate_new_session(NewSession(AGENT, metadata={f"k{i}": "v" for i in range(33)}))
    assert violations(caught.value) == {"session.metadata"}


def test_a_name_that_cannot_be_an_agent_is_not_found_like_another_tenants():
    for name in ("agents/nope", "sessions/ses_01m87srx2qrnbdce06p98dr0wk", "agt_01m87srx2qrnbdce06p98dr0wk"):
        with pytest.raises(AgentNotFound):
            validate_new_session(NewSession(name))


def test_a_turn_needs_content_within_bounds_and_plausible_audio():
    validate_turn(TurnRequest("sessions/s", "Hello", "k"), max_content_chars=5)
    for content in ("", "   ", "Hello!"):
        with pytest.raises(InvalidArgument) as caught:
            validate_turn(TurnRequest("sessions/s", content, "k"), max_content_chars=5)
        assert violations(caught.value) == {"content"}
    for seconds in (0, -1, 3600.5):
        with pytest.raises(InvalidArgument) as caught:
            validate_turn(TurnRequest("sessions/s", "Hi", "k", VoiceInput(seconds, "")), max_content_chars=5)
        assert violations(caught.value) == {"voice.audio_seconds"}
