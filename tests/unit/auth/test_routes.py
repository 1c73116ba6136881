"""Check finds a JSON request's RPC by table, with the same answers as trying every HTTP
rule in order; and a body made only of plain strings is accepted without the full parse
exactly when the full parse would accept it."""

from __future__ import annotations

import json

import pytest

from vocalbridge_auth.routes import (
    RouteTable,
    _plain_strings,
    binding_conflicts,
    body_violations,
    contract_routes,
    match,
)

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


def _filled(template: str) -> str:
    """A request path for `template`, its variables filled in."""
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        _, _, pattern = path[start + 1 : end].partition("=")
        path = path[:start] + (pattern or "x").replace("**", "a/b").replace("*", "x1") + path[end + 1 :]
    return path


def _conflicting_requests():
    """For every path variable of every rule: a query parameter naming its field with another
    value, and (when the body can reach the field) a body field doing the same."""
    for route in ROUTES:
        path = _filled(route.template)
        bound = dict(zip(route.bindings, route.pattern.match(path).groups(), strict=True))
        for field, value in bound.items():
            yield route, f"{path}?{field}=other%2F1", None, field, value
            if route.body_type is not None and (not route.body_prefix or field.startswith(route.body_prefix + ".")):
                relative = field.removeprefix(route.body_prefix + ".") if route.body_prefix else field
                document: dict = {}
                node = document
                *parents, last = relative.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[last] = "other/1"
                yield route, path, document, field, value


CONFLICTS = list(_conflicting_requests())


def test_every_path_variable_of_the_contract_is_covered():
    bound = {(route.full_method, field) for route in ROUTES for field in route.bindings}
    assert bound == {(route.full_method, field) for route, _, _, field, _ in CONFLICTS}
    assert len(bound) > 15


@pytest.mark.parametrize(("route", "path", "document", "field", "value"), CONFLICTS)
def test_a_field_the_path_binds_cannot_be_changed_by_the_query_or_the_body(route, path, document, field, value):
    assert [v.field for v in binding_conflicts(route, path, document)] == [field]
    # The same value as the path's is no conflict (a PATCH body often repeats the name).
    same_query = path.split("?", 1)[0] + f"?{field}={value}"
    assert binding_conflicts(route, same_query if document is None else path, _same(document, value)) == []


def _same(document: dict | None, value: str) -> dict | None:
    if document is None:
        return None
    return json.loads(json.dumps(document).replace('"other/1"', json.dumps(value)))
