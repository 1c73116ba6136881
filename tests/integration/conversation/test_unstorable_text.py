"""Text PostgreSQL cannot store is refused on both backends alike, before the provider is
called: a NUL in a turn, a session's external user id or its metadata."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.conversation.conftest import with_key
from tests.support import error_reason, violated_fields
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import session_pb2
from vocalbridge_common.migrations import migrate
from vocalbridge_conversation.delivery import ATTEMPTS
from vocalbridge_conversation.server import MIGRATIONS_DIR, SCHEMA


def _provider_calls() -> float:
    return sum(
        sample.value for metric in ATTEMPTS.collect() for sample in metric.samples if sample.name.endswith("_total")
    )


@pytest.fixture(params=["postgresql", "sqlite"])
async def stub(request, conversation, start_conversation, tmp_path):
    if request.param == "postgresql":
        return conversation
    url = f"sqlite:///{tmp_path / 'var' / 'conversation.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    return await start_conversation(VB_CONVERSATION_DATABASE_URL=url)


async def test_the_same_verdict_on_both_backends_before_any_provider_call(stub, new_session, md):
    agent, session = await new_session(stub)
    calls = _provider_calls()
    for request_kind in ("send", "stream"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if request_kind == "send":
                await stub.SendMessage(
                    cs.SendMessageRequest(session=session.name, content="poem\u0000please"),
                    metadata=with_key(md, f"k-{request_kind}"),
                )
            else:
                call = stub.StreamMessage(
                    cs.StreamMessageRequest(session=session.name, content="poem\u0000please"),
                    metadata=with_key(md, f"k-{request_kind}"),
                )
                [event async for event in call]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "INVALID_ARGUMENT" and violated_fields(caught.value) == {"content"}
    assert _provider_calls() == calls
    for fields, field in (
        ({"external_user_id": "u\u0000"}, "session.external_user_id"),
        ({"metadata": {"k": "v\u0000"}}, "session.metadata['k']"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateSession(
                cs.CreateSessionRequest(session=session_pb2.Session(agent=agent.name, **fields)), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(caught.value) == {field}
    history = await stub.ListMessages(cs.ListMessagesRequest(parent=session.name), metadata=md)
    assert list(history.messages) == []
    # The positive control: the same turn without the NUL runs, with the same key.
    reply = await stub.SendMessage(
        cs.SendMessageRequest(session=session.name, content="poem please"), metadata=with_key(md, "k-send")
    )
    assert reply.user_message.content == "poem please" and _provider_calls() > calls
