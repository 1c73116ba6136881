"""The baseline's Envoy: the product's edge configuration (vocalbridge_edge), pointed at
the echo service, with the ext_authz filter taken out. Everything else is the same as in front
of the real stack — header mutation, CORS, body buffer limit, grpc_json_transcoder, router,
JSON access log, local replies — so that the ratio full stack / baseline is the cost of what
the product does behind Envoy (auth.Check, conversation, provider, PostgreSQL, billing relay)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

import vocalbridge_edge
from vocalbridge_edge import EXT_AUTHZ, Upstream, build_envoy_config, local_params

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SERVICE = "vocalbridge.echo.v1.EchoService"


def build_descriptor_set(out: Path) -> Path:
    """Compiles echo.proto (plus google.rpc.Status and its details, which the transcoder's
    convert_grpc_status needs) into a descriptor set for Envoy."""
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{HERE}",
        f"-I{REPO_ROOT / 'protos' / 'third_party'}",
        f"-I{wkt}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        "echo.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("compiling bench/echo/echo.proto failed")
    return out


def render_baseline_config(*, listen_port: int, admin_port: int, echo_port: int, descriptor_set: Path) -> str:
    params = local_params(
        listen_port=listen_port,
        admin_port=admin_port,
        descriptor_set=str(descriptor_set),
        services=(SERVICE,),
        upstreams={"echo": Upstream("127.0.0.1", echo_port)},
        authz_upstream="echo",  # required by the template; the filter is removed below
        served_packages={},  # only the echo service: no OpenAI-compatible routes
    )
    config = build_envoy_config(params)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != EXT_AUTHZ]
    for vhost in manager["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            route.get("typed_per_filter_config", {}).pop(EXT_AUTHZ, None)
    return json.dumps(config, indent=2) + "\n"


def envoy_command(config_path: Path, envoy: str) -> list[str]:
    return vocalbridge_edge.envoy_command(config_path, envoy=envoy)
