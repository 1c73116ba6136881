"""The provider request keeps the system prompt and the new message, and as much
recent history as the token budget allows: the oldest turns are dropped first."""

from __future__ import annotations

from dataclasses import replace

from vocalbridge_conversation.domain.history import MAX_HISTORY_MESSAGES, HistoryMessage, within_budget
from vocalbridge_conversation.domain.prompt import build_prompt
from vocalbridge_conversation.domain.sessions import Role
from vocalbridge_conversation.domain.turns import AgentConfig
from vocalbridge_conversation.providers.base import count_tokens

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


def message(i: int, role: Role, words: int) -> HistoryMessage:
    return HistoryMessage.of(i + 1, role, " ".join(f"w{i}" for _ in range(words)))


HISTORY = [message(i, Role.USER if i % 2 == 0 else Role.ASSISTANT, 10) for i in range(6)]


def test_everything_fits_a_large_budget():
    request = build_prompt(AGENT, HISTORY, "new question", 1000)
    assert [m.role for m in request.messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert request.messages[-1].content == "new question" and request.temperature == 0.5
    assert request.max_output_tokens == 64


def test_oldest_turns_are_dropped_first():
    fixed = count_tokens("Be brief.") + count_tokens("new question")
    request = build_prompt(AGENT, HISTORY, "new question", fixed + 25)
    kept = [m.content for m in request.messages[1:-1]]
    assert kept == [HISTORY[4].content, HISTORY[5].content]  # the two newest, in order
    assert sum(count_tokens(m.content) for m in request.messages) <= fixed + 25


def test_no_history_when_nothing_fits():
    request = build_prompt(AGENT, HISTORY, "new question", 5)
    assert [m.role for m in request.messages] == ["system", "user"]


def test_history_stops_at_the_first_message_that_does_not_fit():
    # A long message in the middle ends the history there, even if older ones would fit:
    # the provider sees a contiguous recent stretch, never a conversation with holes.
    history = [message(0, Role.USER, 2), message(1, Role.ASSISTANT, 50), message(2, Role.USER, 2)]
    fixed = count_tokens("Be brief.") + count_tokens("new question")
    request = build_prompt(AGENT, history, "new question", fixed + 10)
    assert [m.content for m in request.messages[1:-1]] == [history[2].content]


def test_without_a_system_prompt_only_history_and_the_message_go():
    request = build_prompt(replace(AGENT, system_prompt=""), HISTORY[-2:], "new question", 1000)
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]


def test_a_message_counts_its_tokens_once():
    assert message(0, Role.USER, 7).tokens == count_tokens(message(0, Role.USER, 7).content) == 7


def test_the_window_a_budget_can_use_is_what_any_prompt_keeps():
    # 6 messages of 10 tokens: a budget of 25 can use the newest two, whatever else the prompt holds.
    assert within_budget(HISTORY, 25) == tuple(HISTORY[4:])
    assert within_budget(HISTORY, 1000) == tuple(HISTORY)
    assert within_budget(HISTORY, 5) == ()
    for budget in (30, 45, 60):
        kept = within_budget(HISTORY, budget)
        request = build_prompt(replace(AGENT, system_prompt=""), HISTORY, "q", budget + count_tokens("q"))
        assert [m.content for m in request.messages[:-1]] == [m.content for m in kept]


def test_the_window_holds_at_most_the_history_a_turn_reads():
    long = [message(i, Role.USER, 1) for i in range(MAX_HISTORY_MESSAGES + 50)]
    assert within_budget(long, 10**6) == tuple(long[-MAX_HISTORY_MESSAGES:])
