"""The API surface as compiled (gen/vocalbridge.pb, the descriptor set Envoy's transcoder reads),
for suites that must cover every RPC and every JSON route without naming them by hand: the
methods, their request messages, their HTTP bindings, and how a request becomes a JSON/HTTP
call or a gRPC call through Envoy with any bytes at all."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import status_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gen" / "vocalbridge.pb"
HTTP_BODY = "google.api.HttpBody"


@dataclass(frozen=True)
class Binding:
    verb: str  # get, post, patch, delete, put
    template: str  # /v1/{name=agents/*}
    body: str  # "", "*" or a request field


@dataclass(frozen=True)
class Method:
    full_name: str  # vocalbridge.agents.v1.AgentService.GetAgent
    descriptor: descriptor.MethodDescriptor
    bindings: tuple[Binding, ...]

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def grpc_path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def input(self) -> descriptor.Descriptor:
        return self.descriptor.input_type

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def raw_http_body(self) -> bool:
        """Answers in another API's JSON (the OpenAI-compatible routes), not the protobuf mapping."""
        return self.descriptor.output_type.full_name == HTTP_BODY

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.input)

    def request(self, fields: dict[str, Any]) -> Message:
        """The request message from its protobuf JSON form."""
        return json_format.ParseDict(fields, self.request_class()())


@cache
def pool() -> descriptor_pool.DescriptorPool:
    """A pool of its own built from the descriptor set alone, so that what is covered is what
    was compiled, not what some module happened to import."""
    assert DESCRIPTOR_SET.is_file(), f"{DESCRIPTOR_SET} is missing: run `make gen`"
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR_SET.read_bytes())
    built = descriptor_pool.DescriptorPool()
    for file in fds.file:
        built.Add(file)
    return built


def _bindings(rule: http_pb2.HttpRule) -> Iterator[Binding]:
    for r in (rule, *rule.additional_bindings):
        pattern = r.WhichOneof("pattern")
        if pattern == "custom":
            yield Binding(r.custom.kind.lower(), r.custom.path, r.body)
        elif pattern is not None:
            yield Binding(pattern, getattr(r, pattern), r.body)


@cache
def methods() -> tuple[Method, ...]:
    """Every RPC of the project's own services, in descriptor order."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR_SET.read_bytes())
    found = []
    for file_proto in fds.file:
        if not file_proto.name.startswith("vocalbridge/"):
            continue
        for service_proto in file_proto.service:
            for method_proto in service_proto.method:
                full = f"{file_proto.package}.{service_proto.name}.{method_proto.name}"
                bindings: tuple[Binding, ...] = ()
                if method_proto.options.HasExtension(annotations_pb2.http):
                    bindings = tuple(_bindings(method_proto.options.Extensions[annotations_pb2.http]))
                method = pool().FindMethodByName(full)
                found.append(Method(full, method, bindings))
    return tuple(found)


# --------------------------------------------------------------------------- JSON/HTTP


_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


def _pop_path(fields: dict[str, Any], dotted: str) -> Any:
    """Removes and returns the value at a dotted proto field path (snake_case) of a JSON dict."""
    parts = [json_format_name(p) for p in dotted.split(".")]
    node: Any = fields
    for part in parts[:-1]:
        node = node.get(part, {}) if isinstance(node, dict) else None
    return node.pop(parts[-1], None) if isinstance(node, dict) else None


def json_format_name(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, inner)
    elif isinstance(value, list):
        for item in value:
            yield from _flatten(prefix, item)
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, str(value)


@dataclass(frozen=True)
class HttpCall:
    verb: str
    path: str
    params: tuple[tuple[str, str], ...]
    body: Any  # JSON value, or None for no body


def http_call(binding: Binding, fields: dict[str, Any]) -> HttpCall:
    """How Envoy's transcoder expects `fields` (a request in protobuf JSON form) on `binding`:
    path variables from their fields, the body field (or the rest for `*`) as JSON, every
    other field as a query parameter."""
    rest = json.loads(json.dumps(fields))  # a deep copy we may take apart

    def substitute(match: re.Match[str]) -> str:
        value = _pop_path(rest, match.group(1))
        if value is None:
            raise ValueError(f"{binding.template}: no value for {match.group(1)} in {fields}")
        return percent_encode(str(value), safe="/")

    path = _VARIABLE.sub(substitute, binding.template)
    body: Any = None
    if binding.body == "*":
        body, rest = rest, {}
    elif binding.body:
        body = rest.pop(json_format_name(binding.body), {})
    return HttpCall(binding.verb, path, tuple(_flatten("", rest)), body)


def percent_encode(value: str, safe: str = "") -> str:
    """Percent-encoding of any string, lone surrogates and NUL included (as their bytes)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe=safe)


def url_of(call: HttpCall) -> str:
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in call.params)
    return call.path + (f"?{query}" if query else "")


async def send_http(
    http: httpx.AsyncClient,
    call: HttpCall,
    headers: dict[str, str] | list[tuple[str, str]],
    *,
    content: bytes | None = None,
) -> httpx.Response:
    """Sends `call` as is: the body as JSON (lone surrogates escaped as JSON allows) unless
    `content` is given, the path and query percent-encoded byte by byte."""
    header_list = list(headers.items()) if isinstance(headers, dict) else list(headers)
    if content is None and call.body is not None:
        content = json.dumps(call.body).encode()
        if not any(k.lower() == "content-type" for k, _ in header_list):
            header_list.append(("content-type", "application/json"))
    request = http.build_request(call.verb.upper(), url_of(call), content=content, headers=header_list)
    return await http.send(request)


def http_body(value: dict[str, Any]) -> dict[str, Any]:
    """A google.api.HttpBody carrying `value` as JSON (the OpenAI-compatible routes)."""
    return {"contentType": "application/json", "data": base64.b64encode(json.dumps(value).encode()).decode()}


def is_status_json(response: httpx.Response) -> bool:
    """A JSON google.rpc.Status: a numeric code, a message, and (when there are any) typed details."""
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("code"), int)
        and isinstance(body.get("message"), str)
        and all(isinstance(d, dict) and "@type" in d for d in body.get("details", []))
    )


def is_openai_error_json(response: httpx.Response) -> bool:
    """An error in OpenAI's shape: {"error": {"message": ..., "type": ...}}."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error


def error_reason(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    for detail in body.get("details", []) if isinstance(body, dict) else []:
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail.get("reason"))
    return None


# --------------------------------------------------------------------------- gRPC through Envoy


@dataclass
class GrpcOutcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes]
    status: status_pb2.Status | None  # from grpc-status-details-bin, if sent

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK

    def reason(self) -> str | None:
        from google.rpc import error_details_pb2

        for detail in self.status.details if self.status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
        return None


def _identity(value: bytes) -> bytes:
    return value


def _rich_status(trailers: Sequence[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value if isinstance(value, bytes) else value.encode())
            return status
    return None


async def call_grpc(
    channel: grpc.aio.Channel,
    method: Method,
    payloads: Sequence[bytes],
    metadata: Sequence[tuple[str, str]],
    timeout: float = 20.0,
    *,
    target: str,
) -> GrpcOutcome:
    """Calls `method` with raw request bytes (one message, or several for client streaming) and
    collects every response message and the final status, whatever the kind of RPC. `target`
    is the address `channel` reaches (client streams go over a blocking channel of their own)."""
    kwargs = {"request_serializer": _identity, "response_deserializer": _identity}
    responses: list[bytes] = []
    call: Any
    if method.client_streaming:
        return await asyncio.to_thread(_call_client_streaming, target, method, payloads, metadata, timeout)
    try:
        if method.server_streaming:
            call = channel.unary_stream(method.grpc_path, **kwargs)(payloads[0], metadata=metadata, timeout=timeout)
            async for item in call:
                responses.append(item)
        else:
            call = channel.unary_unary(method.grpc_path, **kwargs)(payloads[0], metadata=metadata, timeout=timeout)
            responses.append(await call)
        return GrpcOutcome(grpc.StatusCode.OK, "", responses, None)
    except grpc.aio.AioRpcError as error:
        return GrpcOutcome(error.code(), error.details() or "", responses, _rich_status(error.trailing_metadata()))


def _call_client_streaming(
    target: str, method: Method, payloads: Sequence[bytes], metadata: Sequence[tuple[str, str]], timeout: float
) -> GrpcOutcome:
    """A client stream over the blocking API: the asyncio client reports its own INTERNAL
    "Internal error from Core" instead of the server's status when the server ends the call
    while the client is still writing (an early refusal; grpc/grpc#36066), the blocking one
    reports the server's."""
    responses: list[bytes] = []
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(method.grpc_path, request_serializer=_identity, response_deserializer=_identity)
        try:
            for item in call(iter(payloads), metadata=metadata, timeout=timeout):
                responses.append(item)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()  # type: ignore[attr-defined]
            return GrpcOutcome(code, details or "", responses, _rich_status(error.trailing_metadata()))  # type: ignore[attr-defined]
    return GrpcOutcome(grpc.StatusCode.OK, "", responses, None)
