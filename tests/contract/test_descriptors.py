"""The contract as compiled: gen/vocalbridge.pb (the FileDescriptorSet that
tools/gen_protos.sh writes with --include_imports --include_source_info, and
that Envoy's JSON transcoder reads) obeys the proto conventions of
CONVENTIONS.md and DESIGN.md §3.

Each rule is a function returning the list of violations, so a failure names
every offending element; the `test_rule_catches_*` tests feed each rule a
deliberately broken descriptor to prove it can fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2  # registers the google.api.http extension
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gen" / "vocalbridge.pb"

# RPCs that only the gateway's own services call; they must not be reachable
# over JSON/HTTP, so they carry no google.api.http rule.
INTERNAL_RPCS = frozenset(
    {
        "vocalbridge.billing.v1.BillingService.RecordUsage",
        "vocalbridge.auth.v1.AuthService.GetTenantLimits",
        "vocalbridge.conversation.v1.ConversationService.StreamVoiceTurn",
    }
)

# Operator RPCs whose HTTP path may name tenants; everywhere else the tenant is
# implied by the API key and never part of a path.
TENANT_PATH_RPCS = frozenset(
    {
        "vocalbridge.auth.v1.AuthService.CreateTenant",
        "vocalbridge.auth.v1.AuthService.GetTenant",
        "vocalbridge.auth.v1.AuthService.ListTenants",
    }
)

HTTP_VERBS = ("get", "put", "post", "delete", "patch")

# Field numbers inside descriptor.proto, for SourceCodeInfo.Location.path.
_FILE_MESSAGE_TYPE, _FILE_ENUM_TYPE, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED_TYPE, _MESSAGE_ENUM_TYPE, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

FDP = descriptor_pb2.FieldDescriptorProto


# --------------------------------------------------------------------------- loading


def _load(path: Path) -> descriptor_pb2.FileDescriptorSet:
    assert path.is_file(), f"{path} is missing: run tools/gen_protos.sh first"
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return fds


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return _load(DESCRIPTOR_SET)


def _own_files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in fds.file if f.name.startswith("vocalbridge/")]


def _messages(fds) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message of the set (imports included), by fully qualified name."""
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs) -> None:
        for m in msgs:
            full = f"{prefix}.{m.name}" if prefix else m.name
            out[full] = m
            walk(full, m.nested_type)

    for f in fds.file:
        walk(f.package, f.message_type)
    return out


def _methods(fds) -> Iterator[tuple[str, descriptor_pb2.FileDescriptorProto, descriptor_pb2.MethodDescriptorProto]]:
    for f in _own_files(fds):
        for s in f.service:
            for m in s.method:
                yield f"{f.package}.{s.name}.{m.name}", f, m


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> http_pb2.HttpRule | None:
    if not method.options.HasExtension(annotations_pb2.http):
        return None
    return method.options.Extensions[annotations_pb2.http]


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    """(verb, path, body) of a rule and of its additional bindings."""
    for r in (rule, *rule.additional_bindings):
        pattern = r.WhichOneof("pattern")
        if pattern == "custom":
            yield r.custom.kind.lower(), r.custom.path, r.body
        elif pattern is not None:
            yield pattern, getattr(r, pattern), r.body
        else:
            yield "", "", r.body


def _type_name(ref: str) -> str:
    return ref.lstrip(".")


# --------------------------------------------------------------------------- rules


def http_rule_violations(fds) -> list[str]:
    """Every RPC has a google.api.http rule, except the internal allow-list,
    which must have none (and must name RPCs that exist), and client-streaming
    RPCs, which JSON/HTTP cannot carry (gRPC only)."""
    errors = []
    seen = set()
    for full, _, m in _methods(fds):
        seen.add(full)
        rule = _http_rule(m)
        if full in INTERNAL_RPCS or m.client_streaming:
            if rule is not None:
                errors.append(f"{full}: internal or client-streaming RPC must not be exposed over HTTP")
        elif rule is None:
            errors.append(f"{full}: no google.api.http rule")
    for stale in sorted(INTERNAL_RPCS - seen):
        errors.append(f"{stale}: listed as internal but no such RPC exists")
    return errors


def http_path_violations(fds) -> list[str]:
    """Paths start with /v1/, use a standard verb, bind only fields of the
    request; GET/DELETE have no body; a body names `*` or a request field."""
    msgs = _messages(fds)
    errors = []
    for full, _, m in _methods(fds):
        rule = _http_rule(m)
        if rule is None:
            continue
        request = msgs[_type_name(m.input_type)]
        for verb, path, body in _bindings(rule):
            where = f"{full} {verb.upper()} {path!r}"
            if verb not in HTTP_VERBS:
                errors.append(f"{where}: verb must be one of {HTTP_VERBS}")
            if not path.startswith("/v1/"):
                errors.append(f"{where}: path must start with /v1/")
            for var in re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", path):
                if not _resolves(msgs, request, var.split(".")):
                    errors.append(f"{where}: path variable {var!r} is not a field of {request.name}")
            if verb in ("get", "delete") and body:
                errors.append(f"{where}: {verb.upper()} must not have a body")
            if body and body != "*" and not _resolves(msgs, request, [body]):
                errors.append(f"{where}: body {body!r} is not a field of {request.name}")
            if verb in ("post", "patch", "put") and not body:
                errors.append(f"{where}: {verb.upper()} should take a body")
    return errors


def _resolves(msgs, message: descriptor_pb2.DescriptorProto, parts: list[str]) -> bool:
    field = next((f for f in message.field if f.name == parts[0]), None)
    if field is None:
        return False
    if len(parts) == 1:
        return True
    if field.type != FDP.TYPE_MESSAGE:
        return False
    return _resolves(msgs, msgs[_type_name(field.type_name)], parts[1:])


def tenant_path_violations(fds) -> list[str]:
    """The tenant is implied by the API key: no path outside the operator's
    tenant RPCs mentions tenants."""
    errors = []
    for full, _, m in _methods(fds):
        rule = _http_rule(m)
        if rule is None or full in TENANT_PATH_RPCS:
            continue
        for verb, path, _ in _bindings(rule):
            if "tenant" in path.lower():
                errors.append(f"{full} {verb.upper()} {path!r}: tenant in a non-operator path")
    return errors


# A raw HTTP body: the RPC answers in another API's JSON (the OpenAI-compatible API's
# ListModels is OpenAI's list, which has no pages), not in the protobuf JSON mapping.
HTTP_BODY = ".google.api.HttpBody"


def pagination_violations(fds) -> list[str]:
    """List* RPCs take int32 page_size and string page_token and return the
    items (a repeated field) plus string next_page_token; except those that
    answer with a raw HTTP body in another API's shape."""
    msgs = _messages(fds)
    errors = []
    for full, _, m in _methods(fds):
        if not m.name.startswith("List") or m.output_type == HTTP_BODY:
            continue
        req = msgs[_type_name(m.input_type)]
        resp = msgs[_type_name(m.output_type)]
        req_fields = {f.name: f for f in req.field}
        resp_fields = {f.name: f for f in resp.field}
        for name, ftype, fields, owner in (
            ("page_size", FDP.TYPE_INT32, req_fields, req.name),
            ("page_token", FDP.TYPE_STRING, req_fields, req.name),
            ("next_page_token", FDP.TYPE_STRING, resp_fields, resp.name),
        ):
            f = fields.get(name)
            if f is None:
                errors.append(f"{full}: {owner} has no {name}")
            elif f.type != ftype or f.label == FDP.LABEL_REPEATED:
                errors.append(f"{full}: {owner}.{name} must be a singular {FDP.Type.Name(ftype)}")
        if m.server_streaming or m.client_streaming:
            errors.append(f"{full}: a List method must be unary")
        if not any(f.label == FDP.LABEL_REPEATED and f.type == FDP.TYPE_MESSAGE for f in resp.field):
            errors.append(f"{full}: {resp.name} has no repeated field of items")
    return errors


def request_naming_violations(fds) -> list[str]:
    """A unique `<Rpc>Request` per RPC, in the service's package. (Responses
    may be the resource itself, as AIP standard and custom methods return it.)"""
    errors = []
    for full, f, m in _methods(fds):
        expected = f".{f.package}.{m.name}Request"
        if m.input_type != expected:
            errors.append(f"{full}: request is {m.input_type}, expected {expected}")
    return errors


def _comment_targets(f: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source path, what) of every element that must carry a comment."""

    def enum(path, prefix, e):
        yield path, f"enum {prefix}.{e.name}"
        for i, v in enumerate(e.value):
            yield (*path, _ENUM_VALUE, i), f"enum value {prefix}.{e.name}.{v.name}"

    def message(path, prefix, msg):
        full = f"{prefix}.{msg.name}"
        yield path, f"message {full}"
        for i, fld in enumerate(msg.field):
            yield (*path, _MESSAGE_FIELD, i), f"field {full}.{fld.name}"
        for i, o in enumerate(msg.oneof_decl):
            if not any(fl.proto3_optional for fl in msg.field if fl.HasField("oneof_index") and fl.oneof_index == i):
                yield (*path, _MESSAGE_ONEOF, i), f"oneof {full}.{o.name}"
        for i, nested in enumerate(msg.nested_type):
            if not nested.options.map_entry:  # synthesized for map<,> fields
                yield from message((*path, _MESSAGE_NESTED_TYPE, i), full, nested)
        for i, e in enumerate(msg.enum_type):
            yield from enum((*path, _MESSAGE_ENUM_TYPE, i), full, e)

    for i, msg in enumerate(f.message_type):
        yield from message((_FILE_MESSAGE_TYPE, i), f.package, msg)
    for i, e in enumerate(f.enum_type):
        yield from enum((_FILE_ENUM_TYPE, i), f.package, e)
    for i, s in enumerate(f.service):
        yield (_FILE_SERVICE, i), f"service {f.package}.{s.name}"
        for j, m in enumerate(s.method):
            yield (_FILE_SERVICE, i, _SERVICE_METHOD, j), f"rpc {f.package}.{s.name}.{m.name}"


def comment_violations(fds) -> list[str]:
    """Every message, field, oneof, enum, enum value, service and RPC has a
    leading `//` comment (read from the descriptor set's source info)."""
    errors = []
    for f in _own_files(fds):
        if not f.source_code_info.location:
            errors.append(f"{f.name}: no source info (generate with --include_source_info)")
            continue
        comments = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location}
        for path, what in _comment_targets(f):
            if not comments.get(path, "").strip():
                errors.append(f"{f.name}: {what} has no leading comment")
    return errors


# Enums whose values DESIGN §3 shows unprefixed in JSON ("role": "USER",
# groupBy=DAY): their zero value keeps the prefix, the others do without.
UNPREFIXED_ENUMS = {"vocalbridge.conversation.v1.Role", "vocalbridge.billing.v1.GroupBy"}


def enum_violations(fds) -> list[str]:
    """Enums are top-level, values prefixed with the enum's UPPER_SNAKE name,
    and the zero value is <PREFIX>_UNSPECIFIED."""
    errors = []
    for f in _own_files(fds):
        for msg in f.message_type:
            for e in msg.enum_type:
                errors.append(f"{f.package}.{msg.name}.{e.name}: enums must be top-level")
        for e in f.enum_type:
            prefix = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", e.name).upper() + "_"
            zero = [v for v in e.value if v.number == 0]
            if not zero or zero[0].name != f"{prefix}UNSPECIFIED":
                errors.append(f"{f.package}.{e.name}: zero value must be {prefix}UNSPECIFIED")
            for v in e.value:
                if f"{f.package}.{e.name}" in UNPREFIXED_ENUMS and v.number != 0:
                    continue
                if not v.name.startswith(prefix):
                    errors.append(f"{f.package}.{e.name}.{v.name}: value must start with {prefix}")
    return errors


def package_violations(fds) -> list[str]:
    """Package vocalbridge.<svc>.v<N>, mirrored by the file's directory;
    lower_snake_case file names."""
    errors = []
    for f in _own_files(fds):
        directory, _, base = f.name.rpartition("/")
        if not re.fullmatch(r"vocalbridge\.[a-z][a-z0-9_]*\.v[1-9][0-9]*", f.package):
            errors.append(f"{f.name}: package {f.package!r} is not vocalbridge.<svc>.v<N>")
        if directory.replace("/", ".") != f.package:
            errors.append(f"{f.name}: package {f.package!r} does not match directory {directory!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*\.proto", base):
            errors.append(f"{f.name}: file name must be lower_snake_case.proto")
    return errors


RULES: dict[str, Callable[[descriptor_pb2.FileDescriptorSet], list[str]]] = {
    "http_rule": http_rule_violations,
    "http_path": http_path_violations,
    "tenant_path": tenant_path_violations,
    "pagination": pagination_violations,
    "request_naming": request_naming_violations,
    "comments": comment_violations,
    "enums": enum_violations,
    "package": package_violations,
}


# --------------------------------------------------------------------------- tests on the real contract


def test_descriptor_set_holds_every_service(descriptor_set):
    services = {f"{f.package}.{s.name}" for f in _own_files(descriptor_set) for s in f.service}
    assert {
        "vocalbridge.auth.v1.AuthService",
        "vocalbridge.agents.v1.AgentService",
        "vocalbridge.conversation.v1.ConversationService",
        "vocalbridge.billing.v1.BillingService",
        "vocalbridge.voice.v1.VoiceService",
    } <= services


@pytest.mark.parametrize("rule", sorted(RULES))
def test_contract_obeys(descriptor_set, rule):
    assert RULES[rule](descriptor_set) == []


def test_http_surface_of_design(descriptor_set):
    """The JSON flows of DESIGN.md §3 resolve to these RPCs."""
    routes = {}
    for full, _, m in _methods(descriptor_set):
        rule = _http_rule(m)
        if rule is not None:
            for verb, path, body in _bindings(rule):
                routes[(verb, path)] = (full, body)
    expected = {
        ("post", "/v1/sessions"): ("vocalbridge.conversation.v1.ConversationService.CreateSession", "session"),
        ("get", "/v1/{parent=sessions/*}/messages"): (
            "vocalbridge.conversation.v1.ConversationService.ListMessages",
            "",
        ),
        ("post", "/v1/{session=sessions/*}/messages"): (
            "vocalbridge.conversation.v1.ConversationService.SendMessage",
            "*",
        ),
        ("post", "/v1/{session=sessions/*}/messages:stream"): (
            "vocalbridge.conversation.v1.ConversationService.StreamMessage",
            "*",
        ),
        ("get", "/v1/usage:summary"): ("vocalbridge.billing.v1.BillingService.GetUsageSummary", ""),
        ("get", "/v1/usageEvents"): ("vocalbridge.billing.v1.BillingService.ListUsageEvents", ""),
        ("get", "/v1/prices"): ("vocalbridge.billing.v1.BillingService.ListPrices", ""),
        ("post", "/v1/{session=sessions/*}/voice:converse"): ("vocalbridge.voice.v1.VoiceService.Converse", "*"),
        ("post", "/v1/voice:transcribe"): ("vocalbridge.voice.v1.VoiceService.Transcribe", "*"),
        ("post", "/v1/voice:synthesize"): ("vocalbridge.voice.v1.VoiceService.Synthesize", "*"),
        ("post", "/v1/tenants"): ("vocalbridge.auth.v1.AuthService.CreateTenant", "*"),
        ("get", "/v1/agents"): ("vocalbridge.agents.v1.AgentService.ListAgents", ""),
        ("post", "/v1/chat/completions"): ("vocalbridge.openai.v1.OpenAIService.CreateChatCompletion", "body"),
        ("get", "/v1/models"): ("vocalbridge.openai.v1.OpenAIService.ListModels", ""),
    }
    assert {k: routes.get(k) for k in expected} == expected
    streaming = {full for full, _, m in _methods(descriptor_set) if m.server_streaming or m.client_streaming}
    assert streaming == {
        "vocalbridge.conversation.v1.ConversationService.StreamMessage",
        "vocalbridge.conversation.v1.ConversationService.StreamVoiceTurn",
        "vocalbridge.voice.v1.VoiceService.StreamingConverse",
        # One HTTP rule for both of OpenAI's answers: one JSON body, or Server-Sent Events.
        "vocalbridge.openai.v1.OpenAIService.CreateChatCompletion",
    }
    # OpenAI's JSON passes through as raw bytes both ways.
    msgs = {full: m for full, _, m in _methods(descriptor_set)}
    for rpc in ("CreateChatCompletion", "ListModels"):
        assert msgs[f"vocalbridge.openai.v1.OpenAIService.{rpc}"].output_type == HTTP_BODY


def test_json_numbers_and_strings_of_design(descriptor_set):
    """DESIGN.md §3 shows token counts of a turn as JSON numbers (int32) and
    money and ledger totals as JSON strings (int64)."""
    msgs = _messages(descriptor_set)

    def ftype(message: str, field: str) -> int:
        return next(f.type for f in msgs[message].field if f.name == field)

    usage = "vocalbridge.conversation.v1.Usage"
    assert ftype(usage, "prompt_tokens") == FDP.TYPE_INT32
    assert ftype(usage, "completion_tokens") == FDP.TYPE_INT32
    assert ftype(usage, "cost_micros") == FDP.TYPE_INT64
    assert ftype(usage, "tts_characters") == FDP.TYPE_INT64
    totals = "vocalbridge.billing.v1.UsageTotals"
    for field in ("turns", "prompt_tokens", "completion_tokens", "tts_characters", "cost_micros"):
        assert ftype(totals, field) == FDP.TYPE_INT64, field
    assert ftype("vocalbridge.voice.v1.Audio", "sample_rate_hertz") == FDP.TYPE_INT32
    # Every money field anywhere is integer micros.
    money = [
        (name, f.name, FDP.Type.Name(f.type))
        for name, m in msgs.items()
        if name.startswith("vocalbridge.")
        for f in m.field
        if ("cost" in f.name or "micros" in f.name) and f.type != FDP.TYPE_INT64
    ]
    assert money == []


# --------------------------------------------------------------------------- the rules can fail


def _broken_set() -> descriptor_pb2.FileDescriptorSet:
    """A small contract that breaks every rule once."""
    http = annotations_pb2.http
    f = descriptor_pb2.FileDescriptorProto(
        name="vocalbridge/bad/v1/BadService.proto", package="vocalbridge.wrong.v1", syntax="proto3"
    )
    f.enum_type.add(name="Colour").value.add(name="RED", number=0)
    item = f.message_type.add(name="Item")
    item.field.add(name="name", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    item.enum_type.add(name="Nested").value.add(name="NESTED_UNSPECIFIED", number=0)
    req = f.message_type.add(name="ListItemsRequest")
    req.field.add(name="page_size", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    resp = f.message_type.add(name="ListItemsResponse")
    resp.field.add(
        name="items", number=1, type=FDP.TYPE_MESSAGE, type_name=".vocalbridge.wrong.v1.Item", label=FDP.LABEL_REPEATED
    )
    f.message_type.add(name="Other")
    svc = f.service.add(name="BadService")
    listing = svc.method.add(
        name="ListItems",
        input_type=".vocalbridge.wrong.v1.ListItemsRequest",
        output_type=".vocalbridge.wrong.v1.ListItemsResponse",
    )
    listing.options.Extensions[http].get = "/v2/tenants/{tenant}/items"
    unexposed = svc.method.add(
        name="DoThing", input_type=".vocalbridge.wrong.v1.Other", output_type=".vocalbridge.wrong.v1.Other"
    )
    assert not unexposed.options.HasExtension(http)
    posting = svc.method.add(
        name="SendItem", input_type=".vocalbridge.wrong.v1.Item", output_type=".vocalbridge.wrong.v1.Item"
    )
    posting.options.Extensions[http].post = "/v1/{name=items/*}:send"
    posting.options.Extensions[http].body = "missing"
    # Source info with a comment on the service only.
    f.source_code_info.location.add(path=[_FILE_SERVICE, 0], leading_comments=" A service.\n")
    return descriptor_pb2.FileDescriptorSet(file=[f])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("http_rule", ["BadService.DoThing: no google.api.http rule", "RecordUsage: listed as internal"]),
        (
            "http_path",
            ["path must start with /v1/", "path variable 'tenant' is not a field", "body 'missing' is not a field"],
        ),
        ("tenant_path", ["ListItems GET '/v2/tenants/{tenant}/items': tenant in a non-operator path"]),
        ("pagination", ["page_size must be a singular TYPE_INT32", "has no page_token", "has no next_page_token"]),
        ("request_naming", ["DoThing: request is .vocalbridge.wrong.v1.Other", "SendItem: request is"]),
        (
            "comments",
            [
                "message vocalbridge.wrong.v1.Item has no leading comment",
                "field vocalbridge.wrong.v1.Item.name has no leading comment",
                "enum value vocalbridge.wrong.v1.Colour.RED has no leading comment",
                "rpc vocalbridge.wrong.v1.BadService.ListItems has no leading comment",
            ],
        ),
        (
            "enums",
            [
                "Item.Nested: enums must be top-level",
                "zero value must be COLOUR_UNSPECIFIED",
                "RED: value must start with COLOUR_",
            ],
        ),
        ("package", ["does not match directory", "file name must be lower_snake_case.proto"]),
    ],
)
def test_rule_catches(rule, expected):
    found = "\n".join(RULES[rule](_broken_set()))
    for fragment in expected:
        assert fragment in found, f"{rule} missed {fragment!r}; reported:\n{found}"


def test_comment_rule_needs_source_info(descriptor_set):
    stripped = descriptor_pb2.FileDescriptorSet()
    stripped.CopyFrom(descriptor_set)
    for f in stripped.file:
        f.ClearField("source_code_info")
    assert any("no source info" in e for e in comment_violations(stripped))
