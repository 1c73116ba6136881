"""The provider request of a turn: the agent's system prompt, as much recent history as
fits the context budget, and the new message. The oldest turns are the ones dropped."""

from __future__ import annotations

from collections.abc import Sequence

from vocalbridge_conversation.domain.history import HistoryMessage
from vocalbridge_conversation.domain.sessions import Role
from vocalbridge_conversation.domain.turns import AgentConfig
from vocalbridge_conversation.providers.base import ChatMessage, CompletionRequest, count_prompt_tokens


def build_prompt(
    agent: AgentConfig, history: Sequence[HistoryMessage], content: str, budget_tokens: int
) -> CompletionRequest:
    """`history` oldest first. The system prompt and the new message always go; history
    is added newest first while it fits what they leave of `budget_tokens`, and stops at
    the first message that does not fit, so what is sent is a contiguous recent stretch."""
    system = [ChatMessage("system", agent.system_prompt)] if agent.system_prompt else []
    latest = ChatMessage("user", content)
    budget = budget_tokens - count_prompt_tokens([*system, latest])
    kept: list[ChatMessage] = []
    for message in reversed(history):
        if not message.content:
            continue  # a spoken reply the caller interrupted before its first word: nothing was said
        if message.tokens > budget:
            break
        budget -= message.tokens
        kept.append(ChatMessage("user" if message.role is Role.USER else "assistant", message.content))
    kept.reverse()
    return CompletionRequest(
        model=agent.model,
        messages=(*system, *kept, latest),
        temperature=agent.temperature,
        top_p=agent.top_p,
        max_output_tokens=agent.max_output_tokens,
    )
