"""The recent history of the sessions this process serves, so a turn reads from the
database only the messages committed since its session's previous turn.

Messages are numbered per session in commit order (`seq`, see migration 0003) and never
change once stored, so a window known up to number n stays true: what a turn needs is
the messages numbered after n. A turn takes the session's `window` (n = its `last_seq`,
0 for none), reads the messages after n in the same round trip as its claim, and
`merge`s them in. The numbers make this safe with several processes or replicas: a turn
served elsewhere only means more messages to read here. A window holds what a prompt can
use (`within_budget`); the least recently used sessions are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from vocalbridge_conversation.domain.history import MAX_HISTORY_MESSAGES, HistoryMessage, within_budget


@dataclass(frozen=True)
class HistoryWindow:
    """A session's history as of message number `last_seq`: the newest messages a prompt can
    use, oldest first."""

    last_seq: int = 0
    messages: tuple[HistoryMessage, ...] = ()


NO_WINDOW = HistoryWindow()


class HistoryCache:
    def __init__(self, max_sessions: int, budget_tokens: int) -> None:
        self._max_sessions = max_sessions
        self._budget_tokens = budget_tokens
        self._windows: OrderedDict[str, HistoryWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def window(self, session_id: str) -> HistoryWindow:
        """What is known of the session (NO_WINDOW, numbered 0, when nothing is)."""
        return self._windows.get(session_id, NO_WINDOW)

    def merge(
        self, session_id: str, base: HistoryWindow, last_seq: int, fetched: Sequence[HistoryMessage]
    ) -> tuple[HistoryMessage, ...]:
        """The session's history for a turn: `base` (taken from `window` before the read) and
        `fetched`, the history messages numbered above `base.last_seq`, oldest first, at most
        MAX_HISTORY_MESSAGES of them, read with the session at `last_seq`. Remembered for the
        next turn unless a newer window was remembered meanwhile."""
        if base.last_seq == 0 or len(fetched) >= MAX_HISTORY_MESSAGES:
            # A whole read, or the newest messages already fill the window.
            messages = within_budget(fetched, self._budget_tokens)
        else:
            messages = within_budget((*base.messages, *fetched), self._budget_tokens)
        current = self._windows.get(session_id)
        if current is None or current.last_seq <= last_seq:
            self._put(session_id, HistoryWindow(last_seq, messages))
        return messages

    def extend(self, session_id: str, last_seq: int, added: int, messages: Sequence[HistoryMessage]) -> None:
        """The session's store committed `added` messages, numbered up to `last_seq`, of which
        `messages` belong in the history. Kept only when the window was current just before;
        otherwise another turn's messages would be missing from it, and it is forgotten."""
        window = self._windows.get(session_id)
        if window is None:
            return
        if window.last_seq != last_seq - added:
            del self._windows[session_id]
            return
        self._put(
            session_id, HistoryWindow(last_seq, within_budget((*window.messages, *messages), self._budget_tokens))
        )

    def forget(self, session_id: str) -> None:
        self._windows.pop(session_id, None)

    def _put(self, session_id: str, window: HistoryWindow) -> None:
        self._windows[session_id] = window
        self._windows.move_to_end(session_id)
        while len(self._windows) > self._max_sessions:
            self._windows.popitem(last=False)
