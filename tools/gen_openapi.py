"""Generates the OpenAPI 3.1 document of the JSON API from the descriptor set.

    python tools/gen_openapi.py [--descriptor-set gen/vocalbridge.pb] [--out gen/openapi.json]

Run by `make gen` after tools/gen_protos.sh; never edit the output by hand. Every RPC with a
`google.api.http` rule becomes an operation, mapped the way Envoy's JSON transcoder maps it:

- paths: a variable bound to a resource name (`{name=agents/*}`) becomes one path parameter per
  wildcard, named after the collection before it (`/v1/agents/{agentsId}`), so that
  `/v1/` + a resource name is a URL of the document;
- the body is the field the rule names (or the whole request for `*`, less the fields bound in
  the path); without a body, the request's other fields are query parameters;
- schemas follow the protobuf JSON mapping: lowerCamelCase names, 64-bit integers as strings,
  enums by name, bytes as base64, Timestamp, Duration and FieldMask as strings;
- every error is a `google.rpc.Status` (with ErrorInfo, BadRequest and RequestInfo details),
  except in a package that speaks another API's shapes (OWN_ERRORS: the OpenAI-compatible API,
  whose errors the edge renders as OpenAI's `{"error": {...}}`);
- server-streaming RPCs answer with Server-Sent Events, one message per `data:` line; a
  `google.api.HttpBody` answer is raw bytes (streamed or not), described by the method's comment;
- the proto comments are the descriptions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/"
STATUS = "google.rpc.Status"
# Error details the gateway puts into google.rpc.Status (DESIGN §4); documented as schemas.
ERROR_DETAILS = ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RequestInfo")
HTTP_BODY = "google.api.HttpBody"
METHODS = ("get", "put", "post", "delete", "patch")
# Packages whose errors are not google.rpc.Status: the response component that describes them.
OWN_ERRORS = {"vocalbridge.openai.v1": "OpenAIError"}
OPENAI_ERROR: dict[str, Any] = {
    "description": "An error in OpenAI's shape, with the HTTP status of the refusal (400, 401, 403, 404, 409, "
    "429 with `Retry-After`, 5xx). `x-should-retry: false` marks the refusals a retry cannot change.",
    "headers": {
        "x-request-id": {"description": "The request id.", "schema": {"type": "string"}},
        "x-should-retry": {"description": "`false` where retrying cannot help.", "schema": {"type": "string"}},
    },
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {
                                "type": "string",
                                "description": "invalid_request_error, authentication_error, permission_error, "
                                "rate_limit_error, insufficient_quota or server_error.",
                            },
                            "param": {"type": ["string", "null"], "description": "The first invalid parameter."},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            }
        }
    },
}
IDEMPOTENCY_KEY = "Idempotency-Key"

FDP = descriptor_pb2.FieldDescriptorProto
_INT64 = {FDP.TYPE_INT64, FDP.TYPE_SINT64, FDP.TYPE_SFIXED64}
_UINT64 = {FDP.TYPE_UINT64, FDP.TYPE_FIXED64}
_INT32 = {FDP.TYPE_INT32, FDP.TYPE_SINT32, FDP.TYPE_SFIXED32}
_UINT32 = {FDP.TYPE_UINT32, FDP.TYPE_FIXED32}

# Well-known types have their own JSON form (the protobuf JSON mapping).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time in UTC, for example `2026-11-24T10:15:00Z`.",
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with up to nine fractional digits and the suffix `s`, for example `0.012s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths, for example `displayName,systemPrompt`.",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The type URL of the message."}},
        "required": ["@type"],
        "additionalProperties": True,
        "description": "A message of any type: `@type` names it, its fields follow.",
    },
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "uint32"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
}


# --------------------------------------------------------------------------------------------
# What the descriptor set holds


@dataclass
class Message:
    full_name: str
    proto: descriptor_pb2.DescriptorProto
    comment: str
    field_comments: dict[str, str]


@dataclass
class Enum:
    full_name: str
    proto: descriptor_pb2.EnumDescriptorProto
    comment: str
    value_comments: dict[str, str]


@dataclass
class Method:
    service: str
    service_full_name: str
    proto: descriptor_pb2.MethodDescriptorProto
    comment: str
    rule: http_pb2.HttpRule


@dataclass
class Catalogue:
    messages: dict[str, Message] = field(default_factory=dict)
    enums: dict[str, Enum] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)  # full name -> comment
    methods: list[Method] = field(default_factory=list)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found = {}
    for location in file.source_code_info.location:
        if location.leading_comments:
            found[tuple(location.path)] = _clean(location.leading_comments)
    return found


def _clean(comment: str) -> str:
    return textwrap.dedent(comment).strip()


def read_catalogue(path: str | os.PathLike[str]) -> Catalogue:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(path).read_bytes())
    catalogue = Catalogue()
    for file in fds.file:
        comments = _comments(file)
        prefix = f"{file.package}." if file.package else ""

        def add_messages(
            messages: Any, scope: str, path: tuple[int, ...], comments: dict[tuple[int, ...], str] = comments
        ) -> None:
            for i, message in enumerate(messages):
                here = (*path, i)
                name = f"{scope}{message.name}"
                catalogue.messages[name] = Message(
                    name,
                    message,
                    comments.get(here, ""),
                    {f.name: comments.get((*here, 2, j), "") for j, f in enumerate(message.field)},
                )
                for k, nested in enumerate(message.enum_type):
                    add_enum(nested, f"{name}.", (*here, 4, k))
                add_messages(message.nested_type, f"{name}.", (*here, 3))

        def add_enum(
            enum: descriptor_pb2.EnumDescriptorProto,
            scope: str,
            path: tuple[int, ...],
            comments: dict[tuple[int, ...], str] = comments,
        ) -> None:
            name = f"{scope}{enum.name}"
            catalogue.enums[name] = Enum(
                name,
                enum,
                comments.get(path, ""),
                {v.name: comments.get((*path, 2, j), "") for j, v in enumerate(enum.value)},
            )

        add_messages(file.message_type, prefix, (4,))
        for k, enum in enumerate(file.enum_type):
            add_enum(enum, prefix, (5, k))
        for s, service in enumerate(file.service):
            service_name = f"{prefix}{service.name}"
            catalogue.services[service_name] = comments.get((6, s), "")
            for m, method in enumerate(service.method):
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                catalogue.methods.append(
                    Method(
                        service.name,
                        service_name,
                        method,
                        comments.get((6, s, 2, m), ""),
                        method.options.Extensions[annotations_pb2.http],
                    )
                )
    return catalogue


# --------------------------------------------------------------------------------------------
# HTTP rules


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of a method (its rule or one of the rule's additional bindings)."""

    verb: str
    template: str
    body: str
    response_body: str


def bindings(rule: http_pb2.HttpRule) -> Iterator[Binding]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        verb, template = rule.custom.kind.lower(), rule.custom.path
    elif pattern is not None:
        verb, template = pattern, getattr(rule, pattern)
    else:
        return
    yield Binding(verb, template, rule.body, rule.response_body)
    for extra in rule.additional_bindings:
        yield from bindings(extra)


_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class PathParam:
    name: str  # the OpenAPI parameter
    field_path: str  # the request field it fills, e.g. `agent.name`
    resource_pattern: str  # e.g. `agents/*`
    collection: str


def openapi_path(template: str) -> tuple[str, list[PathParam]]:
    """`/v1/{name=agents/*}:revoke` → (`/v1/agents/{agentsId}:revoke`, [the parameter])."""
    params: list[PathParam] = []

    def replace(match: re.Match[str]) -> str:
        field_path, pattern = match.group(1), match.group(2) or "*"
        segments = pattern.split("/")
        out = []
        for i, segment in enumerate(segments):
            if segment in ("*", "**"):
                collection = segments[i - 1] if i > 0 else field_path.rsplit(".", 1)[-1]
                name = f"{_camel(collection)}Id" if i > 0 else _camel(field_path.replace(".", "_"))
                params.append(PathParam(name, field_path, pattern, collection))
                out.append("{" + name + "}")
            else:
                out.append(segment)
        return "/".join(out)

    return _VARIABLE.sub(replace, template), params


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --------------------------------------------------------------------------------------------
# Schemas (protobuf JSON mapping)


class SchemaBuilder:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.schemas: dict[str, dict[str, Any]] = {}

    def ref(self, full_name: str) -> dict[str, Any]:
        """A reference to a message or enum, adding its schema (and what it uses) once."""
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        if full_name not in self.schemas:
            self.schemas[full_name] = {}  # placeholder: breaks cycles
            if full_name in self.catalogue.enums:
                self.schemas[full_name] = self._enum(self.catalogue.enums[full_name])
            elif full_name in self.catalogue.messages:
                self.schemas[full_name] = self.message_schema(self.catalogue.messages[full_name])
            else:
                raise KeyError(f"{full_name} is not in the descriptor set")
        return {"$ref": SCHEMA_REF + full_name}

    def _enum(self, enum: Enum) -> dict[str, Any]:
        values = [v.name for v in enum.proto.value]
        lines = [enum.comment] if enum.comment else []
        lines += [f"- `{v}`: {_one_line(enum.value_comments.get(v, ''))}" for v in values]
        return {"type": "string", "enum": values, "description": "\n".join(lines).strip()}

    def message_schema(self, message: Message, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in message.proto.field:
            if f.name in skip:
                continue
            prop = self.field_schema(f)
            behaviors = set(f.options.Extensions[field_behavior_pb2.field_behavior])
            description = message.field_comments.get(f.name, "")
            if field_behavior_pb2.REQUIRED in behaviors:
                description = f"Required. {description}".strip()
                # Required on input; a request message is only ever input.
                if message.full_name.endswith("Request"):
                    required.append(f.json_name)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                prop["readOnly"] = True
                description = f"Output only. {description}".strip()
            if description:
                prop["description"] = description
            properties[f.json_name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if message.comment:
            schema["description"] = message.comment
        return schema

    def field_schema(self, f: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if f.type == FDP.TYPE_MESSAGE:
            entry = self.catalogue.messages.get(f.type_name.lstrip("."))
            if entry is not None and entry.proto.options.map_entry:
                _key, value = entry.proto.field
                return {"type": "object", "additionalProperties": self.field_schema(value)}
        single = self._single(f)
        if f.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, f: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            return self.ref(f.type_name.lstrip("."))
        if f.type in _INT64:
            return {"type": "string", "format": "int64"}
        if f.type in _UINT64:
            return {"type": "string", "format": "uint64"}
        if f.type in _INT32:
            return {"type": "integer", "format": "int32"}
        if f.type in _UINT32:
            return {"type": "integer", "format": "uint32"}
        if f.type == FDP.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if f.type == FDP.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        if f.type == FDP.TYPE_BOOL:
            return {"type": "boolean"}
        if f.type == FDP.TYPE_BYTES:
            return {"type": "string", "format": "byte", "contentEncoding": "base64"}
        return {"type": "string"}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _summary(comment: str) -> str:
    first = _one_line(comment)
    match = re.match(r"(.+?\.)(\s|$)", first)
    return match.group(1) if match else first


# --------------------------------------------------------------------------------------------
# The document


def _query_parameters(
    builder: SchemaBuilder, message: Message, skip: set[str], prefix: str = "", depth: int = 0
) -> list[dict[str, Any]]:
    """The request fields that a client sends in the query string (transcoder rules: scalars,
    enums, repeated scalars and nested messages as dotted names)."""
    params = []
    for f in message.proto.field:
        if f.name in skip:
            continue
        name = prefix + f.json_name
        description = message.field_comments.get(f.name, "")
        type_name = f.type_name.lstrip(".")
        if f.type == FDP.TYPE_MESSAGE and type_name not in _WELL_KNOWN:
            nested = builder.catalogue.messages.get(type_name)
            if nested is None or nested.proto.options.map_entry or depth >= 3 or f.label == FDP.LABEL_REPEATED:
                continue  # not expressible in a query string
            params += _query_parameters(builder, nested, set(), f"{name}.", depth + 1)
            continue
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": builder.field_schema(f)}
        if f.label == FDP.LABEL_REPEATED:
            param["explode"] = True
        if description:
            param["description"] = description
        params.append(param)
    return params


def _operation(builder: SchemaBuilder, method: Method, binding: Binding, index: int) -> tuple[str, dict[str, Any]]:
    catalogue = builder.catalogue
    request = catalogue.messages[method.proto.input_type.lstrip(".")]
    response_type = method.proto.output_type.lstrip(".")
    path, path_params = openapi_path(binding.template)
    bound_top = {p.field_path.split(".")[0] for p in path_params}

    parameters: list[dict[str, Any]] = []
    for p in path_params:
        parameters.append(
            {
                "name": p.name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": f"The id in `{p.field_path}` (`{p.resource_pattern}`).",
            }
        )
    if binding.body == "":
        parameters += _query_parameters(builder, request, bound_top)
    elif binding.body != "*":
        parameters += _query_parameters(builder, request, bound_top | {binding.body})

    if IDEMPOTENCY_KEY in method.comment:
        optional = re.search(rf"`{IDEMPOTENCY_KEY}` header is optional", _one_line(method.comment)) is not None
        parameters.append(
            {
                "name": IDEMPOTENCY_KEY,
                "in": "header",
                "required": not optional,
                "schema": {"type": "string", "minLength": 1},
                "description": "A key of the client's choosing: the same key and request again return the "
                "stored response without running the call twice.",
            }
        )

    operation: dict[str, Any] = {
        "operationId": method.proto.name if index == 0 else f"{method.proto.name}{index + 1}",
        "tags": [method.service],
        "summary": _summary(method.comment),
        "description": method.comment,
        "x-grpc-method": f"{method.service_full_name}.{method.proto.name}",
    }
    if parameters:
        operation["parameters"] = parameters

    if binding.body:
        if request.full_name == HTTP_BODY or (
            binding.body != "*" and _field(request, binding.body).type_name.lstrip(".") == HTTP_BODY
        ):
            body_schema: dict[str, Any] = {"description": "The raw request body."}
        elif binding.body == "*":
            body_schema = builder.message_schema(request, skip=frozenset(bound_top))
            body_schema.pop("description", None)
        else:
            body_field = _field(request, binding.body)
            body_schema = builder.field_schema(body_field)
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}

    if response_type == HTTP_BODY:
        content: dict[str, Any] = {"*/*": {"schema": {"description": "The raw response body."}}}
    elif method.proto.server_streaming:
        content = {
            "text/event-stream": {
                "schema": {"type": "string"},
                "x-sse-data": builder.ref(response_type),
            }
        }
    else:
        content = {"application/json": {"schema": builder.ref(response_type)}}
    ok: dict[str, Any] = {"description": "OK", "content": content}
    if response_type == HTTP_BODY and method.proto.server_streaming:
        ok["description"] = "The raw response body, streamed (for example Server-Sent Events), as the method says."
    elif method.proto.server_streaming:
        ok["description"] = (
            f"Server-Sent Events: each event's `data:` line is one `{response_type}` as JSON "
            "(see `x-sse-data`). An error after the first event ends the stream with a "
            "`google.rpc.Status` event."
        )
    if IDEMPOTENCY_KEY in method.comment:
        ok["headers"] = {
            "idempotent-replayed": {
                "description": "`true` when this is the stored response of an earlier request with the same key.",
                "schema": {"type": "string"},
            }
        }
    package = method.service_full_name.rsplit(".", 1)[0]
    error = OWN_ERRORS.get(package, "Error")
    operation["responses"] = {"200": ok, "default": {"$ref": f"#/components/responses/{error}"}}
    return path, {binding.verb: operation}


def _field(message: Message, name: str) -> descriptor_pb2.FieldDescriptorProto:
    for f in message.proto.field:
        if f.name == name:
            return f
    raise KeyError(f"{message.full_name} has no field {name!r}")


def build_document(catalogue: Catalogue) -> dict[str, Any]:
    builder = SchemaBuilder(catalogue)
    paths: dict[str, dict[str, Any]] = {}
    used_services: list[str] = []
    for method in catalogue.methods:
        for index, binding in enumerate(bindings(method.rule)):
            path, operation = _operation(builder, method, binding, index)
            verb = next(iter(operation))
            if verb not in METHODS:
                raise ValueError(f"{method.proto.name}: HTTP method {verb!r} has no OpenAPI equivalent")
            item = paths.setdefault(path, {})
            if verb in item:
                raise ValueError(f"{verb.upper()} {path} is bound twice ({method.proto.name})")
            item[verb] = operation[verb]
        if method.service_full_name not in used_services:
            used_services.append(method.service_full_name)

    status = builder.ref(STATUS)
    for detail in ERROR_DETAILS:
        builder.ref(detail)
    builder.schemas[STATUS] = dict(builder.schemas[STATUS])
    builder.schemas[STATUS]["description"] = (
        builder.schemas[STATUS].get("description", "")
        + "\n\nThe gateway's details: `google.rpc.ErrorInfo` (an UPPER_SNAKE `reason`, its `domain` and "
        "`metadata`), `google.rpc.BadRequest` (field violations of invalid input) and "
        "`google.rpc.RequestInfo` (the request id, also in the `x-request-id` response header)."
    ).strip()

    tags = [
        {"name": name.rsplit(".", 1)[-1], "description": catalogue.services.get(name, "")} for name in used_services
    ]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "VocalBridge API",
            "version": "v1",
            "description": (
                "The JSON API of the VocalBridge gateway, generated from its protos and their "
                "`google.api.http` rules. Field names are lowerCamelCase and 64-bit integers are "
                "JSON strings (the protobuf JSON mapping). Authenticate with "
                "`Authorization: Bearer <api key>` (or `x-api-key`); the tenant is implied by the "
                "key. Resource names are `collection/id`: a resource's URL is `/v1/` + its name."
            ),
        },
        "servers": [{"url": "/", "description": "The gateway that serves this document"}],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "responses": {
                "Error": {
                    "description": "An error: the HTTP status follows the gRPC code (for example 400, 401, "
                    "403, 404, 409, 429, 503).",
                    "headers": {
                        "x-request-id": {"description": "The request id.", "schema": {"type": "string"}},
                    },
                    "content": {"application/json": {"schema": status}},
                },
                **dict.fromkeys(OWN_ERRORS.values(), OPENAI_ERROR),
            },
            "schemas": dict(sorted(builder.schemas.items())),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--descriptor-set", default=str(REPO_ROOT / "gen" / "vocalbridge.pb"))
    parser.add_argument("--out", default=str(REPO_ROOT / "gen" / "openapi.json"))
    args = parser.parse_args(argv)
    document = build_document(read_catalogue(args.descriptor_set))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    operations = sum(len(item) for item in document["paths"].values())
    print(f"generated {out} ({operations} operations, {len(document['components']['schemas'])} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
