"""Small field checks that collect FieldViolations instead of raising at the first one."""

from __future__ import annotations

from vocalbridge_common.errors import FieldViolation


class Violations(list[FieldViolation]):
    """A list of FieldViolation with helpers for the common checks."""

    def add(self, field: str, description: str) -> None:
        self.append(FieldViolation(field, description))

    def length(self, field: str, value: str, *, minimum: int = 0, maximum: int) -> None:
        if len(value) < minimum:
            self.add(field, "is required" if minimum == 1 else f"must be at least {minimum} characters")
        elif len(value) > maximum:
            self.add(field, f"must be at most {maximum} characters (got {len(value)})")

    def display_name(self, field: str, value: str) -> None:
        if value != value.strip():
            self.add(field, "must not start or end with whitespace")
        if any(ord(ch) < 32 for ch in value):
            self.add(field, "must not contain control characters")
        self.length(field, value, minimum=1, maximum=100)
