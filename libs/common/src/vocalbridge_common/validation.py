"""Field checks that collect FieldViolations instead of raising at the first one, and the one
check of stored text (and of times) that every request passes before any handler runs.

Stored text: PostgreSQL's `text` cannot hold NUL and neither backend should hold a lone
surrogate (not UTF-8), while SQLite takes both; so a request is refused for them before
it can reach a provider, a ledger or a table, and both backends give the same verdict.
`request_violations` walks every string of a request message (nested messages, repeated
fields, map keys and values) from its descriptor; the server interceptor calls it on each
request of the API's own packages. Per-field length ceilings are declared once, below, by
the field's full name; every other string has the default ceiling. A service's own,
often tighter, limits still apply after this. Timestamps and durations anywhere in a request
must be within the ranges their protos define (a converter raises outside them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vocalbridge_common.errors import FieldViolation

# NUL (PostgreSQL text cannot store it) and UTF-16 surrogates (never valid alone in UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Any string of a request not declared below: names, ids, filters, page tokens, etags,
# display names (a page token is at most 2048 characters too).
DEFAULT_MAX_TEXT_CHARS = 2048
# The longest text a request may carry at all; the services' own settings (message content,
# system prompt) are checked after this and are expected to be at most this.
MAX_LONG_TEXT_CHARS = 1_000_000

# Fields whose text is longer than the default, by full name (`package.Message.field`).
TEXT_LIMITS: dict[str, int] = {
    "vocalbridge.agents.v1.Agent.system_prompt": MAX_LONG_TEXT_CHARS,
    "vocalbridge.conversation.v1.SendMessageRequest.content": MAX_LONG_TEXT_CHARS,
    "vocalbridge.conversation.v1.StreamMessageRequest.content": MAX_LONG_TEXT_CHARS,
    "vocalbridge.conversation.v1.VoiceTurnStart.content": MAX_LONG_TEXT_CHARS,
    "vocalbridge.voice.v1.SynthesizeRequest.text": MAX_LONG_TEXT_CHARS,
}

# Requests of these packages are walked; others (Envoy's ext_authz CheckRequest, health,
# reflection) carry text that is never stored and has limits of its own.
CHECKED_PACKAGE_PREFIX = "vocalbridge."


def text_problem(value: str, maximum: int) -> str | None:
    """Why `value` cannot be stored as text of at most `maximum` characters, or None."""
    if len(value) > maximum:
        return f"must be at most {maximum} characters (got {len(value)})"
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"must not contain the NUL character (at position {found.start()})"
    return f"must be valid UTF-8 text: a lone surrogate at position {found.start()}"


# The ranges google/protobuf/timestamp.proto and duration.proto define: outside them a value
# has no datetime or timedelta (converting it raises), so it is refused with the text.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_DURATION_SECONDS = 315_576_000_000  # about 10,000 years
_NANOS = 1_000_000_000


def _time_problem(message: Message) -> str | None:
    name = message.DESCRIPTOR.full_name
    seconds: int = getattr(message, "seconds", 0)
    nanos: int = getattr(message, "nanos", 0)
    if name == "google.protobuf.Timestamp":
        if not (_MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS and 0 <= nanos < _NANOS):
            return "must be a time between 0001-01-01 and 9999-12-31"
    elif name == "google.protobuf.Duration":
        same_sign = seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0)
        if not (abs(seconds) <= _MAX_DURATION_SECONDS and abs(nanos) < _NANOS and same_sign):
            return f"must be a duration of at most {_MAX_DURATION_SECONDS} seconds either way"
    return None


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD, one character for one: for text
    the gateway did not get from its caller and must store anyway (a provider's reply or error)."""
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


def _limit(field: FieldDescriptor) -> int:
    return TEXT_LIMITS.get(field.full_name, DEFAULT_MAX_TEXT_CHARS)


def _walk(message: Message, path: str) -> Iterator[FieldViolation]:
    problem = _time_problem(message)
    if problem:
        yield FieldViolation(path.rstrip("."), problem)
        return
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            limit = _limit(field)
            if field.is_repeated:
                for index, item in enumerate(value):
                    problem = text_problem(item, limit)
                    if problem:
                        yield FieldViolation(f"{where}[{index}]", problem)
            else:
                problem = text_problem(value, limit)
                if problem:
                    yield FieldViolation(where, problem)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            entry: Descriptor | None = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                yield from _walk_map(entry, value, where)
            elif field.is_repeated:
                for index, item in enumerate(value):
                    yield from _walk(item, f"{where}[{index}].")
            else:
                yield from _walk(value, f"{where}.")


def _walk_map(entry: Descriptor, mapping: object, where: str) -> Iterator[FieldViolation]:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for key, value in mapping.items():  # type: ignore[attr-defined]
        if isinstance(key, str):
            problem = text_problem(key, _limit(key_field))
            if problem:
                yield FieldViolation(f"{where}[{key[:40]!r}]", f"key {problem}")
                continue
        if value_field.type == FieldDescriptor.TYPE_STRING:
            problem = text_problem(value, _limit(value_field))
            if problem:
                yield FieldViolation(f"{where}[{key!r}]", problem)
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _walk(value, f"{where}[{key!r}].")


# -- naming the field of a request that does not decode ---------------------------------------
# upb refuses a string that is not UTF-8 without saying which; reading the wire format against
# the descriptor finds it, so the client learns which field (often a path or query parameter).

_MAX_DEPTH = 100  # protobuf's own recursion limit


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]  # IndexError past the end: the bytes are not a message
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _not_utf8(descriptor: Descriptor, data: bytes, path: str, depth: int) -> Iterator[FieldViolation]:
    pos, seen = 0, dict[int, int]()
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            chunk, pos = data[pos : pos + length], pos + length
            field = descriptor.fields_by_number.get(number)
            if len(chunk) != length or field is None:
                continue
            where = path + field.name
            if field.is_repeated:
                seen[number] = seen.get(number, -1) + 1
                where += f"[{seen[number]}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")  # strict: an encoded surrogate is refused too
                except UnicodeDecodeError:
                    yield FieldViolation(where, "must be valid UTF-8 text")
            elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None and depth < _MAX_DEPTH:
                yield from _not_utf8(field.message_type, chunk, where + ".", depth + 1)
        else:
            raise ValueError("group or unknown wire type")
        if pos > len(data):
            raise ValueError("truncated")


def undecodable_fields(descriptor: Descriptor, data: bytes) -> list[FieldViolation]:
    """The string fields of `data` (a serialized `descriptor` message that failed to parse) that
    are not UTF-8; empty when the bytes are not such a message at all."""
    try:
        return list(_not_utf8(descriptor, data, "", 0))
    except (ValueError, IndexError):
        return []


def request_violations(message: Message) -> list[FieldViolation]:
    """Every string of `message` that cannot be stored, with its path (snake_case) and why."""
    if not message.DESCRIPTOR.full_name.startswith(CHECKED_PACKAGE_PREFIX):
        return []
    return list(_walk(message, ""))


class Violations(list[FieldViolation]):
    """A list of FieldViolation with helpers for the common checks."""

    def add(self, field: str, description: str) -> None:
        self.append(FieldViolation(field, description))

    def length(self, field: str, value: str, *, minimum: int = 0, maximum: int) -> None:
        if len(value) < minimum:
            self.add(field, "is required" if minimum == 1 else f"must be at least {minimum} characters")
        elif len(value) > maximum:
            self.add(field, f"must be at most {maximum} characters (got {len(value)})")

    def text(self, field: str, value: str, *, maximum: int) -> None:
        """Text that will be stored: at most `maximum` characters, no NUL, valid UTF-8 (for text
        that reaches a service other than as a protobuf string, e.g. inside a JSON body)."""
        problem = text_problem(value, maximum)
        if problem:
            self.add(field, problem)

    def display_name(self, field: str, value: str) -> None:
        if value != value.strip():
            self.add(field, "must not start or end with whitespace")
        if any(ord(ch) < 32 for ch in value):
            self.add(field, "must not contain control characters")
        self.length(field, value, minimum=1, maximum=100)
