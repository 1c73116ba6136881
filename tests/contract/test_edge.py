"""The edge configuration (vocalbridge_edge) takes the facts it shares with the services from the
common library, and its descriptor-set check reports what Envoy would trip over.

The configuration as Envoy runs it is tested end to end (tests/e2e) and, for Kubernetes, diffed
against the committed file and validated by Envoy (test_k8s_manifests.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from vocalbridge_common import topology
from vocalbridge_common.errors import ERROR_DOMAIN
from vocalbridge_common.headers import (
    EDGE_SECRET_ENV,
    EDGE_SECRET_HEADER,
    IDENTITY_HEADER,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADER_COUNT,
)
from vocalbridge_common.server import MAX_METADATA_BYTES
from vocalbridge_devstack import stack
from vocalbridge_edge import (
    EnvoyParams,
    build_envoy_config,
    check_descriptor_set,
    descriptor_names,
    http_services,
    k8s_params,
    local_params,
    openai_routes,
)
from vocalbridge_edge.params import DEFAULT_SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gen" / "vocalbridge.pb"


def _manager(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _clusters(config: dict) -> dict[str, int]:
    return {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "port_value"
        ]
        for c in config["static_resources"]["clusters"]
    }


def test_both_profiles_route_to_the_topologys_ports():
    # Kubernetes always has the console's static file server; locally the stack runner adds it.
    # Kubernetes also serves Envoy's stats on a port of their own, proxied to the admin port.
    k8s_own = {"console": topology.CONSOLE_PORT, "edge_admin": topology.EDGE_ADMIN_PORT}
    for params, own in ((local_params(), {}), (k8s_params(), k8s_own)):
        config = build_envoy_config(params)
        assert _clusters(config) == {**topology.SERVICE_PORTS, **own}
        assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == (
            topology.EDGE_PORT
        )
        assert config["admin"]["address"]["socket_address"] == {
            "address": "127.0.0.1",
            "port_value": topology.EDGE_ADMIN_PORT,
        }


def test_the_identity_header_is_stripped_and_errors_carry_the_services_domain():
    manager = _manager(build_envoy_config(local_params()))
    (mutation,) = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.header_mutation"]
    removed = [m["remove"] for m in mutation["typed_config"]["mutations"]["request_mutations"]]
    assert removed[0] == IDENTITY_HEADER

    domains = {
        detail["domain"]
        for mapper in manager["local_reply_config"]["mappers"]
        for detail in mapper.get("body_format_override", {}).get("json_format", {}).get("details", [])
        if detail["@type"].endswith("google.rpc.ErrorInfo")
    }
    assert domains == {ERROR_DOMAIN}


def test_every_transcoded_service_is_one_of_the_topologys():
    for name in DEFAULT_SERVICES:
        package = name.split(".")[1]
        assert topology.SERVED_PACKAGES.get(package, package) in topology.SERVICES, name


def test_the_openai_routes_are_the_openai_packages_http_paths():
    """The paths the edge gives raw bodies and OpenAI's error shape are exactly the HTTP rules of
    vocalbridge.openai.v1, and its gRPC methods route to the service that serves the package."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR_SET.read_bytes())
    paths = {
        getattr(rule, rule.WhichOneof("pattern"))
        for file in fds.file
        if file.package == f"vocalbridge.{openai_routes.PACKAGE}.v1"
        for service in file.service
        for method in service.method
        for rule in [method.options.Extensions[annotations_pb2.http]]
    }
    assert paths == set(openai_routes.PATHS)
    routes = {
        r["name"]: r for r in _manager(build_envoy_config(local_params()))["route_config"]["virtual_hosts"][0]["routes"]
    }
    assert routes["openai"]["match"] == {"prefix": "/vocalbridge.openai.v1."}
    assert routes["openai"]["route"]["cluster"] == topology.SERVED_PACKAGES["openai"] == "conversation"
    for path in openai_routes.PATHS:
        (route,) = [r for r in routes.values() if r["match"] == {"path": path}]
        assert route["typed_per_filter_config"]["envoy.filters.http.lua"]["disabled"] is False


def test_the_stack_runner_starts_every_service_of_the_topology():
    assert sorted(stack.SERVICE_ORDER) == sorted(topology.SERVICES)
    assert stack.StackConfig().service_ports == dict(topology.SERVICE_PORTS)
    assert (stack.StackConfig().http_port, stack.StackConfig().admin_port) == (
        topology.EDGE_PORT,
        topology.EDGE_ADMIN_PORT,
    )


def test_the_descriptor_set_has_what_the_edge_needs():
    assert DESCRIPTOR_SET.is_file(), "run `make gen` first"
    params = local_params(descriptor_set=str(DESCRIPTOR_SET))
    assert check_descriptor_set(params) == []
    services, _ = descriptor_names(DESCRIPTOR_SET)
    assert set(DEFAULT_SERVICES) <= set(services)
    assert set(DEFAULT_SERVICES) <= set(http_services(DESCRIPTOR_SET))


def test_descriptor_set_problems_are_reported(tmp_path):
    """A positive control for check_descriptor_set: a service that is not there, one that has no
    HTTP rule, and missing google.rpc error details are each named."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR_SET.read_bytes())
    kept = [f for f in fds.file if not f.package.startswith("google.rpc")]
    # The agents service loses its HTTP rules; the auth service goes away entirely.
    for file in kept:
        for service in file.service:
            if service.name == "AgentService":
                for method in service.method:
                    method.options.ClearExtension(annotations_pb2.http)
        if file.package == "vocalbridge.auth.v1":
            del file.service[:]
    broken = tmp_path / "broken.pb"
    broken.write_bytes(descriptor_pb2.FileDescriptorSet(file=kept).SerializeToString())

    problems = check_descriptor_set(EnvoyParams(descriptor_set=str(broken)))
    text = "\n".join(problems)
    assert "service vocalbridge.auth.v1.AuthService is not in" in text, text
    assert "vocalbridge.agents.v1.AgentService has no RPC with a google.api.http rule" in text, text
    for message in ("google.rpc.Status", "google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RequestInfo"):
        assert f"{message} is not in" in text, text
    assert len(problems) == 6, problems
    assert check_descriptor_set(EnvoyParams(descriptor_set=str(tmp_path / "missing.pb"))) != []


def test_the_command_line_renders_in_the_virtual_environment(tmp_path):
    out = tmp_path / "envoy.json"
    result = subprocess.run(
        [sys.executable, "-m", "vocalbridge_edge", "--profile", "local", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the descriptor set check found nothing to warn about
    assert json.loads(out.read_text()) == build_envoy_config(local_params())


def _ext_authz(config: dict) -> dict:
    (authz,) = [f for f in _manager(config)["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    return authz["typed_config"]


def test_envoy_sends_the_edge_secret_from_its_environment_only():
    """auth.Check answers Envoy only: Envoy names the variable holding the secret, and the
    rendered configuration (a ConfigMap in Kubernetes) never holds a value."""
    for params in (local_params(), k8s_params()):
        metadata = _ext_authz(build_envoy_config(params))["grpc_service"]["initial_metadata"]
        assert metadata == [{"key": EDGE_SECRET_HEADER, "value": f"%ENVIRONMENT({EDGE_SECRET_ENV})%"}]


def test_header_limits_stay_well_below_what_the_services_accept():
    """auth.Check's limits (what clients are told) are the first a request meets: Envoy's codec
    allows more; and the services accept several times Check's as gRPC metadata."""
    assert MAX_REQUEST_HEADER_BYTES * 4 <= MAX_METADATA_BYTES
    for params in (local_params(), k8s_params()):
        manager = _manager(build_envoy_config(params))
        assert manager["max_request_headers_kb"] * 1024 > MAX_REQUEST_HEADER_BYTES
        assert manager["common_http_protocol_options"]["max_headers_count"] > MAX_REQUEST_HEADER_COUNT
    # A positive control: a codec limit below Check's is refused when rendering.
    with pytest.raises(ValueError, match="max_request_headers_kb"):
        build_envoy_config(local_params(max_request_headers_kb=MAX_REQUEST_HEADER_BYTES // 1024 // 2))


def test_every_local_reply_is_a_json_status_and_none_is_left_out():
    """Every mapper after the pass-through ones writes a google.rpc.Status in JSON, and the last
    ones catch whatever status Envoy may answer with by itself, from 400 up."""
    mappers = _manager(build_envoy_config(local_params()))["local_reply_config"]["mappers"]
    passing = [m for m in mappers if "body_format_override" not in m]
    assert mappers[: len(passing)] == passing == mappers[:2]  # ext_authz denials, native gRPC
    for mapper in mappers[len(passing) :]:
        override = mapper["body_format_override"]
        assert override["content_type"] == "application/json"
        status = override["json_format"]
        assert {"code", "message", "details"} <= status.keys() and status["code"] != 0
        assert status["details"][0]["@type"].endswith("google.rpc.ErrorInfo") and status["details"][0]["reason"]
    statuses = [
        m["filter"].get("status_code_filter") or m["filter"]["and_filter"]["filters"][0]["status_code_filter"]
        for m in mappers[len(passing) :]
    ]
    assert [s["comparison"]["op"] for s in statuses[-2:]] == ["GE", "GE"]
    assert [s["comparison"]["value"]["default_value"] for s in statuses[-2:]] == [500, 400]
    assert 431 in {s["comparison"]["value"]["default_value"] for s in statuses}
