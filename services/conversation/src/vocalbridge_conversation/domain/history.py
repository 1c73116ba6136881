"""A session's history as turns use it: messages numbered in the order their turns
committed, the stretch of them a prompt can use, and what a turn reads when it starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vocalbridge_conversation.domain.sessions import Role, SessionState
from vocalbridge_conversation.providers.base import count_tokens

# History read per turn before the budget trims it: enough for any realistic budget.
MAX_HISTORY_MESSAGES = 200


@dataclass(frozen=True)
class HistoryMessage:
    """A message of the conversation so far, as a prompt uses it: `seq` is its number in
    the session, `tokens` its size, counted once."""

    seq: int
    role: Role
    content: str
    tokens: int

    @classmethod
    def of(cls, seq: int, role: Role, content: str) -> HistoryMessage:
        return cls(seq, role, content, count_tokens(content))


@dataclass(frozen=True)
class OpenedTurn:
    """What a turn learns as it claims its key: the session, whether the claim was made (when
    not, the key is held already and nothing was written), and the session's history
    messages numbered above the number the turn asked from, oldest first."""

    session: SessionState
    claimed: bool
    history: tuple[HistoryMessage, ...]


def within_budget(history: Sequence[HistoryMessage], budget_tokens: int) -> tuple[HistoryMessage, ...]:
    """The newest stretch of `history` (oldest first) a prompt with `budget_tokens` could ever
    use: at most MAX_HISTORY_MESSAGES messages, their tokens together within the budget.
    What `prompt.build_prompt` keeps is always inside it, whatever the system prompt and the
    new message take."""
    kept: list[HistoryMessage] = []
    total = 0
    for message in reversed(history):
        total += message.tokens
        if total > budget_tokens or len(kept) == MAX_HISTORY_MESSAGES:
            break
        kept.append(message)
    kept.reverse()
    return tuple(kept)
