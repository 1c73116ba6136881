"""The provider request of a turn: the agent's system prompt, as much recent history as
fits the context budget, and the new message. The oldest turns are the ones dropped.
A completion outside any session sends the caller's conversation whole after the system
prompt; a turn's own parameters (Overrides) replace the agent's within its bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.validation import Violations
from vocalbridge_conversation.domain.history import HistoryMessage
from vocalbridge_conversation.domain.sessions import Role
from vocalbridge_conversation.domain.turns import AgentConfig, Overrides
from vocalbridge_conversation.providers.base import ChatMessage, CompletionRequest, count_prompt_tokens

# The most output tokens an agent may be configured with (the agents service's own bound):
# what a turn may ask for when its agent sets no maximum of its own.
MAX_OUTPUT_TOKENS = 8192


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


def completion_prompt(agent: AgentConfig, messages: Sequence[ChatMessage]) -> CompletionRequest:
    """A completion's provider request: the agent's system prompt, then the caller's
    conversation as sent (the caller chose it: nothing is dropped), with the agent's parameters."""
    system = (ChatMessage("system", agent.system_prompt),) if agent.system_prompt else ()
    return CompletionRequest(
        model=agent.model,
        messages=(*system, *messages),
        temperature=agent.temperature,
        top_p=agent.top_p,
        max_output_tokens=agent.max_output_tokens,
    )


def apply_overrides(request: CompletionRequest, agent: AgentConfig, overrides: Overrides) -> CompletionRequest:
    """`request` with the turn's own parameters in place of the agent's. The output may be
    capped lower than the agent's maximum, never raised past it (nor past MAX_OUTPUT_TOKENS
    when the agent sets none); the value ranges were checked when the request was read."""
    if not overrides:
        return request
    ceiling = agent.max_output_tokens or MAX_OUTPUT_TOKENS
    if overrides.max_output_tokens is not None and overrides.max_output_tokens > ceiling:
        violations = Violations()
        whose = "the agent's maximum output tokens" if agent.max_output_tokens else "the most an agent may produce"
        violations.add("max_tokens", f"must be at most {ceiling} ({whose}); got {overrides.max_output_tokens}")
        raise invalid_fields(violations)
    return replace(
        request,
        temperature=overrides.temperature if overrides.temperature is not None else request.temperature,
        top_p=overrides.top_p if overrides.top_p is not None else request.top_p,
        max_output_tokens=(
            overrides.max_output_tokens if overrides.max_output_tokens is not None else request.max_output_tokens
        ),
        stop=overrides.stop or request.stop,
        user=overrides.user if overrides.user is not None else request.user,
    )
