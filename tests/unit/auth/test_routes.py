"""Check finds a JSON request's RPC by table, with the same answers as trying every HTTP
rule in order; and a body made only of plain strings is accepted without the full parse
exactly when the full parse would accept it."""

from __future__ import annotations

import json

import pytest

from vocalbridge_auth.routes import RouteTable, _plain_strings, body_violations, contract_routes, match

ROUTES = contract_routes()
TABLE = RouteTable(ROUTES)
IDS = {"agents": "agt_01m87srx2qrnbdce06p98dr0wk", "sessions": "ses_01m87srx2qrnbdce06p98dr0wk"}


def paths() -> list[tuple[str, str]]:
    """A request path for every rule (variables filled in), and paths no rule has."""
    found = []
    for route in ROUTES:
        path = route.template
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            _, _, pattern = path[start + 1 : end].partition("=")
            filled = (pattern or "x").replace("**", "a/b").replace("*", "x1")
            for collection, value in IDS.items():
                filled = filled.replace(f"{collection}/x1", f"{collection}/{value}")
            path = path[:start] + filled + path[end + 1 :]
        found += [(route.http_method, path), (route.http_method, path + "?pageSize=5")]
    extra = ["/", "/v1", "/v1/", "/v2/agents", "/v1/nothing", "/v1/agents/x/y/z/w", "/healthz", "/v1//agents"]
    return found + [(verb, path) for verb in ("GET", "POST", "PATCH", "DELETE") for path in extra]


def test_every_contract_route_is_in_the_table():
    assert len(ROUTES) > 20


@pytest.mark.parametrize(("verb", "path"), paths())
def test_the_table_answers_as_the_rules_in_order_do(verb, path):
    assert TABLE.match(verb, path) is match(ROUTES, verb, path)


SEND = next(route for route in ROUTES if route.full_method.endswith("/SendMessage"))


@pytest.mark.parametrize(
    "body",
    [
        {"content": "Hello"},
        {"content": ""},
        {"content": "Grüße 👋"},  # not ASCII: the full parse decides
        {"content": 5},
        {"content": None},
        {"content": ["a"]},
        {"content": {"a": 1}},
        {"content": "x", "voice": {"audioSeconds": 1.5}},
        {"content": "x", "voice": {"audioSeconds": "fast"}},
        {"session": "sessions/x", "content": "hi"},
    ],
)
def test_a_plain_string_body_is_judged_as_the_full_parse_judges_it(body, monkeypatch):
    raw = json.dumps(body).encode()
    quick = body_violations(SEND, raw)
    monkeypatch.setattr("vocalbridge_auth.routes._plain_strings", lambda document, message: False)
    assert quick == body_violations(SEND, raw)


def test_the_quick_check_takes_only_plain_ascii_strings():
    assert _plain_strings({"content": "Hello"}, SEND.body_type)
    assert not _plain_strings({"content": "Grüße"}, SEND.body_type)
    assert not _plain_strings({"content": "x", "voice": {}}, SEND.body_type)
