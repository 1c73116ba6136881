"""Text to be spoken: what Synthesize accepts, and how a streamed reply is cut into the
pieces spoken one at a time (a sentence, or a long enough clause first, so the first
audio leaves early)."""

from __future__ import annotations

import re

from vocalbridge_common.validation import Violations

MAX_SYNTHESIS_CHARS = 5000
# Where a piece may end: after a sentence's end, or after a clause once the piece is long
# enough to be worth speaking on its own.
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
MIN_CLAUSE_CHARS = 40


def validate_synthesis_text(text: str, violations: Violations, field: str = "text") -> None:
    if not text.strip():
        violations.add(field, "is required and must not be blank")
    elif len(text) > MAX_SYNTHESIS_CHARS:
        violations.add(field, f"must be at most {MAX_SYNTHESIS_CHARS} characters (got {len(text)})")
    elif "\x00" in text:
        violations.add(field, "must not contain NUL characters")


def speakable(text: str) -> bool:
    """Whether `text` has anything an engine would say."""
    return any(ch.isalnum() for ch in text)


class SentenceSplitter:
    """Cuts streamed text into pieces to speak, in order; joined, the pieces give the text back.

    feed() returns the pieces completed by a delta; flush() the rest at the end."""

    def __init__(self) -> None:
        self._pending = ""

    @property
    def pending(self) -> str:
        return self._pending

    def feed(self, delta: str) -> list[str]:
        self._pending += delta
        pieces: list[str] = []
        while True:
            cut = self._cut_point()
            if cut is None:
                return pieces
            pieces.append(self._pending[:cut])
            self._pending = self._pending[cut:]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, ""
        return [rest] if rest else []

    def reset(self) -> None:
        self._pending = ""

    def _cut_point(self) -> int | None:
        sentence = _SENTENCE_END.search(self._pending)
        if sentence is not None:
            return sentence.end()
        for clause in _CLAUSE_END.finditer(self._pending):
            if clause.end() >= MIN_CLAUSE_CHARS:
                return clause.end()
        return None
