"""The public HTTP surface, read from the contracts' `google.api.http` rules,
so Check can tell which RPC a JSON request is for (its scope) and validate
its body strictly before Envoy transcodes it.

Envoy's transcoder accepts JSON fields the contract does not have and drops
them silently; a demanding client wants a 400 for a typo instead. Check sees
the original request (ext_authz runs before the transcoder, with the body),
so it parses the body against the request message with unknown fields
refused, and reports every problem as a BadRequest field violation.

What the path binds, the path decides: a body or query field that names a path variable's
field with another value (`POST /v1/apiKeys/K1:revoke` with `{"name": "apiKeys/K2"}`) would
make the transcoder run another request than the one the path says and the log records, so
it is refused (binding_conflicts), for every rule at once, from the rules themselves.

A route whose body is a `google.api.HttpBody` (the OpenAI-compatible API) takes raw
bytes, not the protobuf JSON mapping: there is nothing for Check to parse, and the
service reads and validates the body itself before any side effect.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from google.api import annotations_pb2
from google.protobuf import descriptor, json_format, symbol_database
from google.protobuf.descriptor import FieldDescriptor

from vocalbridge_common.errors import FieldViolation
from vocalbridge_common.json_limits import JsonTooDeep, loads_bounded

# Messages with their own JSON form (strings or special objects); not walked field by field.
_WELL_KNOWN = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
    "google.protobuf.Empty",
} | {
    f"google.protobuf.{t}Value"
    for t in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}


# A body bound to this message is raw bytes (OpenAI's JSON, for example), not protobuf JSON.
HTTP_BODY = "google.api.HttpBody"


@dataclass(frozen=True)
class Route:
    http_method: str
    pattern: re.Pattern[str]
    full_method: str  # /package.Service/Method
    body_type: descriptor.Descriptor | None  # what the JSON body must parse as; None: nothing to parse
    body_prefix: str  # the request field the body fills ("" for body "*")
    template: str = ""  # the HTTP rule's path template
    # The request fields the path's variables bind (`name`, `agent.name`), in the order of the
    # pattern's groups.
    bindings: tuple[str, ...] = ()


def _template_regex(template: str) -> re.Pattern[str]:
    """`/v1/{name=agents/*}/versions` → ^/v1/(agents/[^/:]+)/versions$ (each variable a group)."""
    out, i = [], 0
    while i < len(template):
        if template[i] == "{":
            end = template.index("}", i)
            _, _, pattern = template[i + 1 : end].partition("=")
            out.append("(" + _segments_regex(pattern or "*") + ")")
            i = end + 1
        else:
            end = template.find("{", i)
            end = len(template) if end == -1 else end
            out.append(_segments_regex(template[i:end]))
            i = end
    return re.compile("^" + "".join(out) + "$")


def _template_bindings(template: str) -> tuple[str, ...]:
    """The fields of a template's variables: `/v1/{agent.name=agents/*}` → ("agent.name",)."""
    return tuple(variable.partition("=")[0] for variable in re.findall(r"\{([^}]*)\}", template))


def _segments_regex(text: str) -> str:
    parts = re.split(r"(\*\*|\*)", text)
    return "".join("[^?#]+" if p == "**" else "[^/:?#]+" if p == "*" else re.escape(p) for p in parts)


def contract_service_files() -> list[descriptor.FileDescriptor]:
    """Every generated `vocalbridge/<svc>/v1/*_service_pb2` module's file descriptor.

    The packages are namespace packages (protoc writes no __init__.py), which
    pkgutil does not walk, so the generated files are found on disk."""
    import vocalbridge

    files = []
    for root in vocalbridge.__path__:
        for path in sorted(Path(root).glob("*/v1/*_service_pb2.py")):
            module = importlib.import_module(".".join(path.relative_to(Path(root).parent).with_suffix("").parts))
            files.append(module.DESCRIPTOR)
    return files


def build_routes(service_files: list[descriptor.FileDescriptor]) -> list[Route]:
    routes = []
    for file in service_files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                template = getattr(rule, verb)
                body_type, prefix = None, ""
                if rule.body == "*":
                    body_type = method.input_type
                elif rule.body:
                    field = method.input_type.fields_by_name[rule.body]
                    body_type, prefix = field.message_type, rule.body
                if body_type is not None and body_type.full_name == HTTP_BODY:
                    body_type = None  # raw bytes: the service validates them
                routes.append(
                    Route(
                        verb.upper(),
                        _template_regex(template),
                        f"/{service.full_name}/{method.name}",
                        body_type,
                        prefix,
                        template,
                        _template_bindings(template),
                    )
                )
    return routes


def contract_routes() -> list[Route]:
    return build_routes(contract_service_files())


def match(routes: list[Route], http_method: str, path: str) -> Route | None:
    """The first of `routes` (in order) for this HTTP method and path, or None."""
    path = path.split("?", 1)[0]
    for route in routes:
        if route.http_method == http_method and route.pattern.match(path):
            return route
    return None


def _first_segment(template: str) -> str | None:
    """The literal first segment after /v1/ of a path template (`sessions` for
    `/v1/{name=sessions/*}/messages`), or None when that segment is a variable."""
    rest = template.removeprefix("/v1/")
    if rest == template:
        return None
    if rest.startswith("{"):
        _, _, pattern = rest[1:].partition("=")
        rest = pattern
    segment = rest.split("/", 1)[0].split("}", 1)[0]
    return None if not segment or "*" in segment else segment


class RouteTable:
    """`match` by table: the routes are grouped by HTTP method and the literal first segment
    of their path after /v1/, so a request is tried against the few routes of its group
    (and those whose first segment is a variable), in the contract's order, instead of
    against every route. Same answers as `match` (tests/unit/auth/test_routes.py)."""

    def __init__(self, routes: list[Route]) -> None:
        self._groups: dict[tuple[str, str | None], list[tuple[int, Route]]] = {}
        for position, route in enumerate(routes):
            key = (route.http_method, _first_segment(route.template))
            self._groups.setdefault(key, []).append((position, route))

    def match(self, http_method: str, path: str) -> Route | None:
        path = path.split("?", 1)[0]
        rest = path.removeprefix("/v1/")
        segment = rest.split("/", 1)[0] if rest != path else None
        candidates = self._groups.get((http_method, segment), []) if segment is not None else []
        anywhere = self._groups.get((http_method, None), [])
        if anywhere:
            candidates = sorted([*candidates, *anywhere], key=lambda entry: entry[0])
        for _, route in candidates:
            if route.pattern.match(path):
                return route
        return None


def body_violations(route: Route, body: bytes) -> list[FieldViolation]:
    """Why `body` is not a valid JSON body for `route` (empty when it is). JsonTooDeep (a
    ValueError) for a body nested deeper than the API ever nests."""
    return parse_body(route, body)[1]


def parse_body(route: Route, body: bytes) -> tuple[dict[str, Any] | None, list[FieldViolation]]:
    """The JSON body of a request for `route` (None when it has none to parse) and why it is
    not a valid one (empty when it is). JsonTooDeep for a body nested too deep."""
    if route.body_type is None or not body.strip():
        return None, []
    prefix = f"{route.body_prefix}." if route.body_prefix else ""
    try:
        document = loads_bounded(body)
    except JsonTooDeep:
        raise  # the caller refuses it with a reason of its own
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [FieldViolation("body", f"not valid JSON: {exc}")]
    if not isinstance(document, dict):
        return None, [FieldViolation("body", "must be a JSON object")]
    return document, _document_violations(route, document, prefix)


def _document_violations(route: Route, document: dict[str, Any], prefix: str) -> list[FieldViolation]:
    assert route.body_type is not None
    violations = list(_unknown_fields(document, route.body_type, prefix))
    if violations:
        return violations
    if _plain_strings(document, route.body_type):
        return []  # what ParseDict would accept without a doubt: no need to run it
    message_class = symbol_database.Default().GetSymbol(route.body_type.full_name)
    try:
        json_format.ParseDict(document, message_class())
    except json_format.ParseError as exc:
        # "Failed to parse parameters field: Failed to parse maxOutputTokens field: …" → parameters.max_output_tokens
        path = [_snake(name) for name in re.findall(r"Failed to parse (\w+) field", str(exc))]
        return [FieldViolation(prefix + ".".join(path) if path else "body", str(exc).split("\n")[0])]
    return []


def _plain_strings(document: dict[str, Any], message: descriptor.Descriptor) -> bool:
    """Whether every field of `document` is a singular string field holding an ASCII string:
    a body ParseDict certainly accepts (the common case, SendMessage's {"content": …}), so
    the full parse can be skipped. Anything else goes through ParseDict."""
    fields = _fields(message)
    for key, value in document.items():
        field = fields.get(key)
        if (
            field is None
            or field.type != FieldDescriptor.TYPE_STRING
            or field.is_repeated
            or not isinstance(value, str)
            or not value.isascii()
        ):
            return False
    return True


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# A message's fields by every name a JSON body may use (its JSON name and its proto name).
_FIELDS_BY_MESSAGE: dict[str, dict[str, FieldDescriptor]] = {}


def _fields(message: descriptor.Descriptor) -> dict[str, FieldDescriptor]:
    fields = _FIELDS_BY_MESSAGE.get(message.full_name)
    if fields is None:
        fields = {**{f.json_name: f for f in message.fields}, **{f.name: f for f in message.fields}}
        _FIELDS_BY_MESSAGE[message.full_name] = fields
    return fields


def _unknown_fields(document: dict[str, Any], message: descriptor.Descriptor, path: str) -> Iterator[FieldViolation]:
    by_name = _fields(message)
    for key, value in document.items():
        field = by_name.get(key)
        if field is None:
            yield FieldViolation(path + key, f"unknown field: {message.full_name} has no field named {key!r}")
            continue
        nested = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        if nested is None or nested.full_name in _WELL_KNOWN or nested.GetOptions().map_entry:
            continue
        items = value if field.is_repeated and isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                yield from _unknown_fields(item, nested, f"{path}{field.name}.")


def binding_conflicts(route: Route, path: str, document: dict[str, Any] | None) -> list[FieldViolation]:
    """The query parameters and body fields of a request for `route` that name a field its path
    binds, with another value. The transcoder would let them win over the path; the path is
    what the client addressed (and what the access log records), so they are refused instead.
    The same value again is no conflict (a PATCH body often repeats the resource's name)."""
    if not route.bindings:
        return []
    bare, _, query = path.partition("?")
    if not query and (document is None or not any(key in document for key in _body_keys(route))):
        return []  # the common case, decided without matching the path again
    found = route.pattern.match(bare)
    if found is None:
        return []
    bound = dict(zip(route.bindings, found.groups(), strict=True))
    conflicts = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        field = ".".join(_snake(part) for part in key.split("."))
        if field in bound and not _same(value, bound[field]):
            conflicts.append(_conflict(field, bound[field], "query parameter"))
    if document is not None and route.body_type is not None:
        for field, value in bound.items():
            if route.body_prefix and not field.startswith(route.body_prefix + "."):
                continue  # the body fills another field: it cannot reach this one
            relative = field.removeprefix(route.body_prefix + ".") if route.body_prefix else field
            given = _body_value(document, route.body_type, relative.split("."))
            if given is not _ABSENT and not _same(given, value):
                conflicts.append(_conflict(field, value, "body field"))
    return conflicts


_ABSENT = object()


@functools.cache
def _body_keys(route: Route) -> frozenset[str]:
    """The top-level body keys (JSON and proto names) through which a body could reach a field
    the path binds."""
    if route.body_type is None:
        return frozenset()
    keys: set[str] = set()
    for field in route.bindings:
        if route.body_prefix and not field.startswith(route.body_prefix + "."):
            continue
        relative = field.removeprefix(route.body_prefix + ".") if route.body_prefix else field
        descriptor_field = _fields(route.body_type).get(relative.split(".")[0])
        if descriptor_field is not None:
            keys.update((descriptor_field.json_name, descriptor_field.name))
    return frozenset(keys)


def _body_value(document: dict[str, Any], message: descriptor.Descriptor, path: list[str]) -> Any:
    """The value at a field path in a JSON body (by JSON or proto names), or _ABSENT."""
    field = _fields(message).get(path[0])
    if field is None:
        return _ABSENT
    value = document.get(field.json_name, document.get(field.name, _ABSENT))
    if len(path) == 1 or value is _ABSENT:
        return value
    if not isinstance(value, dict) or field.message_type is None:
        return _ABSENT
    return _body_value(value, field.message_type, path[1:])


def _same(given: Any, in_path: str) -> bool:
    return isinstance(given, str) and given in (in_path, unquote(in_path))


def _conflict(field: str, in_path: str, where: str) -> FieldViolation:
    return FieldViolation(field, f"the path sets it to {in_path!r}; a {where} must not change it")
