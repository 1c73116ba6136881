"""JSON from clients, parsed with a bound on its nesting.

Python's parser recurses once per level: a body nested a few thousand levels deep raises
RecursionError (an internal error, not the client's), and a merely deep one makes every later
walk over the document expensive. Nothing in the API nests more than a few levels, so anything
deeper than MAX_JSON_DEPTH is refused as the client's mistake.
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    """The document nests objects and arrays deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested more than {limit} levels deep")
        self.limit = limit


def loads_bounded(data: bytes | str, max_depth: int = MAX_JSON_DEPTH, **options: Any) -> Any:
    """json.loads (with `options`, e.g. object_pairs_hook), refusing documents nested deeper than
    `max_depth` with JsonTooDeep (a ValueError, like the parser's own errors)."""
    try:
        document = json.loads(data, **options)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    if json_depth(document) > max_depth:
        raise JsonTooDeep(max_depth)
    return document


def json_depth(document: Any) -> int:
    """How deep objects and arrays nest in a parsed document (a scalar is 0, `[]` is 1).
    Iterative, so that it cannot itself run out of stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest
