"""The provider request keeps the system prompt and the new message, and as much
recent history as the token budget allows: the oldest turns are dropped first."""

from __future__ import annotations

from datetime import UTC, datetime

from vocalbridge.conversation.v1 import message_pb2
from vocalbridge_conversation.agents_client import AgentConfig
from vocalbridge_conversation.models import MessageRow
from vocalbridge_conversation.providers.base import count_tokens
from vocalbridge_conversation.service import ConversationService, TurnSettings

AGENT = AgentConfig(
    agent_id="agt_x",
    version=1,
    system_prompt="Be brief.",
    primary_provider="vendorA",
    fallback_provider=None,
    model="",
    temperature=0.5,
    top_p=None,
    max_output_tokens=64,
)


def row(i: int, role: int, words: int) -> MessageRow:
    return MessageRow(
        id=f"msg_{i:02d}",
        tenant_id="t",
        session_id="s",
        role=role,
        content=" ".join(f"w{i}" for _ in range(words)),
        status=message_pb2.MESSAGE_STATUS_COMPLETE,
        channel=1,
        create_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


def service(budget: int) -> ConversationService:
    return ConversationService(None, None, None, None, None, TurnSettings(context_budget_tokens=budget))


HISTORY = [row(i, message_pb2.USER if i % 2 == 0 else message_pb2.ASSISTANT, 10) for i in range(6)]


def test_everything_fits_a_large_budget():
    request = service(1000)._provider_request(AGENT, HISTORY, "new question")
    assert [m.role for m in request.messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert request.messages[-1].content == "new question" and request.temperature == 0.5
    assert request.max_output_tokens == 64


def test_oldest_turns_are_dropped_first():
    fixed = count_tokens("Be brief.") + count_tokens("new question")
    request = service(fixed + 25)._provider_request(AGENT, HISTORY, "new question")
    kept = [m.content for m in request.messages[1:-1]]
    assert kept == [HISTORY[4].content, HISTORY[5].content]  # the two newest, in order
    assert sum(count_tokens(m.content) for m in request.messages) <= fixed + 25


def test_no_history_when_nothing_fits():
    request = service(5)._provider_request(AGENT, HISTORY, "new question")
    assert [m.role for m in request.messages] == ["system", "user"]
