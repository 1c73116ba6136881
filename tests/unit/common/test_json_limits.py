"""Client JSON is parsed with a bound on nesting: too deep is the client's error (JsonTooDeep, a
ValueError), never a RecursionError, however deep."""

from __future__ import annotations

import json

import pytest

from vocalbridge_common.json_limits import MAX_JSON_DEPTH, JsonTooDeep, json_depth, loads_bounded


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "document, depth",
    [(1, 0), ("x", 0), ([], 1), ({}, 1), ({"a": [1, {"b": []}]}, 4), ([[], [[[]]]], 4)],
)
def test_depth(document, depth):
    assert json_depth(document) == depth


def test_up_to_the_limit_parses():
    assert json_depth(loads_bounded(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    assert loads_bounded(b'{"content": "hi"}') == {"content": "hi"}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deeper_is_refused_as_a_value_error(depth):
    with pytest.raises(JsonTooDeep) as caught:
        loads_bounded(nested(depth))
    assert isinstance(caught.value, ValueError)
    assert str(MAX_JSON_DEPTH) in str(caught.value)


def test_a_positive_control_the_plain_parser_fails_where_the_bounded_one_refuses():
    with pytest.raises(RecursionError):
        json.loads(nested(200_000))


def test_malformed_json_is_still_the_parsers_own_error():
    with pytest.raises(json.JSONDecodeError):
        loads_bounded('{"a": ')
