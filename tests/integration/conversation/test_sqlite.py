"""The same production server on the embedded default, SQLite: sessions, a spoken turn,
its replay and the history, with channels stored as names."""

from __future__ import annotations

import pytest

from tests.integration.conversation.voice_turns import as_voice_service, spoken_turn
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import message_pb2, session_pb2
from vocalbridge_common.migrations import migrate
from vocalbridge_conversation.server import MIGRATIONS_DIR, SCHEMA


@pytest.fixture
async def on_sqlite(start_conversation, tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'conversation.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    return await start_conversation(VB_CONVERSATION_DATABASE_URL=url)


async def test_a_spoken_turn_on_sqlite(on_sqlite, new_session, md, signer, tenant):
    agent, _ = await new_session(on_sqlite)
    session = await on_sqlite.CreateSession(
        cs.CreateSessionRequest(session=session_pb2.Session(agent=agent.name, channel=session_pb2.CHANNEL_VOICE)),
        metadata=md,
    )
    assert (await on_sqlite.GetSession(cs.GetSessionRequest(name=session.name), metadata=md)) == session
    assert session.channel == session_pb2.CHANNEL_VOICE

    voice = as_voice_service(signer, tenant, "spoken")
    result, _ = await spoken_turn(on_sqlite, voice, session.name, "Book a table", 1.5)
    reply = result.turn
    assert not result.replayed
    assert reply.usage.audio_seconds == 1.5 and reply.usage.tts_characters == len(reply.assistant_message.content)
    assert {reply.user_message.channel, reply.assistant_message.channel} == {session_pb2.CHANNEL_VOICE}
    again, _ = await spoken_turn(on_sqlite, voice, session.name, "Book a table", 1.5)
    assert again.replayed and again.turn == reply

    history = await on_sqlite.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert [(m.role, m.channel) for m in history.messages] == [
        (message_pb2.USER, session_pb2.CHANNEL_VOICE),
        (message_pb2.ASSISTANT, session_pb2.CHANNEL_VOICE),
    ]
    listed = await on_sqlite.ListSessions(cs.ListSessionsRequest(agent=agent.name, page_size=1), metadata=md)
    assert [s.name for s in listed.sessions] == [session.name] and listed.next_page_token
