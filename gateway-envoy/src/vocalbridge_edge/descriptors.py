"""What the edge needs from the descriptor set (gen/vocalbridge.pb, written by tools/gen_protos.sh)
that Envoy's JSON transcoder reads: which services and messages it holds, and whether the
configuration asks for anything Envoy would not find there."""

from __future__ import annotations

import os
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from vocalbridge_edge.params import EnvoyParams

# convert_grpc_status can only print error details whose types are in the descriptor set.
ERROR_DETAIL_MESSAGES = (
    "google.rpc.Status",
    "google.rpc.ErrorInfo",
    "google.rpc.BadRequest",
    "google.rpc.RequestInfo",
)


def read_descriptor_set(path: str | Path) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(path).read_bytes())
    return fds


def _full_name(file: descriptor_pb2.FileDescriptorProto, name: str) -> str:
    return f"{file.package}.{name}" if file.package else name


def descriptor_names(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(service full names, top-level message full names) in a FileDescriptorSet file."""
    services: list[str] = []
    messages: list[str] = []
    for file in read_descriptor_set(path).file:
        services.extend(_full_name(file, service.name) for service in file.service)
        messages.extend(_full_name(file, message.name) for message in file.message_type)
    return tuple(services), tuple(messages)


def http_services(path: str | Path) -> tuple[str, ...]:
    """Full names of the services with at least one RPC that has a `google.api.http` rule,
    the only ones transcoding can reach (the transcoder's auto_mapping is off)."""
    return tuple(
        _full_name(file, service.name)
        for file in read_descriptor_set(path).file
        for service in file.service
        if any(method.options.HasExtension(annotations_pb2.http) for method in service.method)
    )


def check_descriptor_set(params: EnvoyParams) -> list[str]:
    """Problems Envoy would hit with this descriptor set (empty when fine)."""
    path = params.descriptor_set
    if not os.path.exists(path):
        return [f"descriptor set {path} does not exist (run tools/gen_protos.sh)"]
    services, messages = descriptor_names(path)
    with_http = http_services(path)
    problems = []
    for service in params.services:
        if service not in services:
            problems.append(f"service {service} is not in {path}")
        elif service not in with_http:
            problems.append(f"service {service} has no RPC with a google.api.http rule: JSON clients cannot reach it")
    problems.extend(
        f"{needed} is not in {path}: error details would not be converted to JSON"
        for needed in ERROR_DETAIL_MESSAGES
        if needed not in messages
    )
    return problems
