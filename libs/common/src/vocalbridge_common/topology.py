"""The services of the gateway and where each listens by default (DESIGN §1).

The service name is also its Envoy cluster, its Kubernetes Service, its database
schema and the segment of its proto package (`vocalbridge.<name>.v1`). Every
address is configurable (`VB_<NAME>_PORT`, `VB_<NAME>_ADDRESS`); these are the
local defaults that the stack runner, the edge renderer and each service share.
"""

from __future__ import annotations

from types import MappingProxyType

SERVICE_PORTS = MappingProxyType(
    {"auth": 50051, "agents": 50052, "conversation": 50053, "billing": 50054, "voice": 50055}
)
SERVICES = tuple(SERVICE_PORTS)
# Proto packages that are an API of another service rather than a service of their own:
# `vocalbridge.<package>.v1` → the service that serves it (its Envoy cluster). The
# OpenAI-compatible API speaks OpenAI's wire shapes, not the gateway's, and conversation serves it.
SERVED_PACKAGES = MappingProxyType({"openai": "conversation"})
# Where each service serves its Prometheus metrics (HTTP, GET /metrics), VB_<NAME>_METRICS_PORT.
METRICS_PORTS = MappingProxyType({"auth": 9151, "agents": 9152, "conversation": 9153, "billing": 9154, "voice": 9155})

# The Envoy edge: the one port clients use, and its admin port (loopback only).
EDGE_PORT = 8080
EDGE_ADMIN_PORT = 9901
# Envoy's own statistics for Prometheus (/stats/prometheus), on a listener of their own so that
# the admin port can stay on loopback.
EDGE_METRICS_PORT = 9902
# The web console's static file server (the app and the OpenAPI document), behind the edge.
CONSOLE_PORT = 8081


def default_port(service: str) -> int:
    return SERVICE_PORTS[service]


def default_address(service: str) -> str:
    """`host:port` of a service on one machine."""
    return f"127.0.0.1:{SERVICE_PORTS[service]}"
