"""What differs between deployments of the edge (`EnvoyParams`) and the two profiles that set it:
one machine (`local_params`) and Kubernetes (`k8s_params`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vocalbridge_common.headers import EDGE_SECRET_ENV
from vocalbridge_common.topology import (
    CONSOLE_PORT,
    EDGE_ADMIN_PORT,
    EDGE_METRICS_PORT,
    EDGE_PORT,
    SERVED_PACKAGES,
    SERVICE_PORTS,
)

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DESCRIPTOR_SET = str(REPO_ROOT / "gen" / "vocalbridge.pb")
# Where the edge image (gateway-envoy/Dockerfile) puts the descriptor set.
K8S_DESCRIPTOR_SET = "/etc/vocalbridge/vocalbridge.pb"

# Transcoded gRPC services (HTTP/JSON → gRPC), by full name. Each name's second segment is an
# upstream (topology.SERVICES): /vocalbridge.<name>.v1.* routes to the cluster of that name; or a
# package another upstream serves (topology.SERVED_PACKAGES: vocalbridge.openai.v1 → conversation).
DEFAULT_SERVICES = (
    "vocalbridge.auth.v1.AuthService",
    "vocalbridge.agents.v1.AgentService",
    "vocalbridge.conversation.v1.ConversationService",
    "vocalbridge.billing.v1.BillingService",
    "vocalbridge.voice.v1.VoiceService",
    "vocalbridge.openai.v1.OpenAIService",
)

# Upstreams whose RPCs run a whole turn (provider calls with retries and fallback, STT/TTS,
# server streaming) get a longer route timeout than the rest.
DEFAULT_ROUTE_TIMEOUT_S = 60.0
SLOW_ROUTE_TIMEOUT_S = 300.0
SLOW_UPSTREAMS = ("conversation", "voice")
# The OpenAI-compatible API: OpenAI's SDKs wait up to 600 s for a completion by default.
OPENAI_ROUTE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Upstream:
    """Where one backend service listens."""

    host: str
    port: int


def _local_upstreams() -> Mapping[str, Upstream]:
    return {name: Upstream("127.0.0.1", port) for name, port in SERVICE_PORTS.items()}


def _slow_route_timeouts() -> Mapping[str, float]:
    return {**dict.fromkeys(SLOW_UPSTREAMS, SLOW_ROUTE_TIMEOUT_S), "openai": OPENAI_ROUTE_TIMEOUT_S}


@dataclass(frozen=True)
class EnvoyParams:
    """Everything that differs between deployments. Defaults are the local profile."""

    listen_address: str = "127.0.0.1"
    listen_port: int = EDGE_PORT
    # Admin stays on loopback in every profile: it can stop Envoy and dump its config.
    admin_address: str = "127.0.0.1"
    admin_port: int = EDGE_ADMIN_PORT
    descriptor_set: str = DEFAULT_DESCRIPTOR_SET
    services: tuple[str, ...] = DEFAULT_SERVICES
    upstreams: Mapping[str, Upstream] = field(default_factory=_local_upstreams)
    # "static": fixed addresses (local processes). "dns": STRICT_DNS, every address the name
    # resolves to is a host — with headless Kubernetes Services that is one host per pod, so
    # Envoy balances requests over pods instead of pinning one HTTP/2 connection to one pod.
    upstream_discovery: str = "static"
    dns_refresh_s: float = 5.0
    # Which upstream serves envoy.service.auth.v3.Authorization/Check.
    authz_upstream: str = "auth"
    authz_timeout_s: float = 2.0
    # JSON request bodies above this are refused with 413 (base64 audio counts: raise it for voice).
    max_request_bytes: int = 1 * MIB
    # Transcoded (JSON) responses above this fail; base64 reply audio is the big one.
    max_response_bytes: int = 8 * MIB
    # Envoy's codec limits on request headers (in all, and how many). auth.Check refuses less
    # (vocalbridge_common.headers.MAX_REQUEST_HEADER_BYTES, _COUNT: a 431 over either HTTP
    # version, a gRPC status for gRPC clients); past these the codec answers by itself (431 over
    # HTTP/1.x, a stream reset over HTTP/2), for requests Check never sees.
    max_request_headers_kb: int = 64
    max_request_headers: int = 200
    # The environment variable, in Envoy's process, holding the edge secret that Envoy sends on
    # every auth.Check (Check answers no one else). Only its name is in the configuration.
    edge_secret_env: str = EDGE_SECRET_ENV
    cors_allowed_origins: tuple[str, ...] = ()
    # Route timeout per upstream or served package; gRPC clients' own deadlines (grpc-timeout)
    # apply when shorter. A served package without one of its own gets its upstream's.
    route_timeouts_s: Mapping[str, float] = field(default_factory=_slow_route_timeouts)
    # Proto packages served by an upstream of another name: `vocalbridge.<package>.v1.*` → upstream.
    served_packages: Mapping[str, str] = field(default_factory=lambda: dict(SERVED_PACKAGES))
    default_route_timeout_s: float = DEFAULT_ROUTE_TIMEOUT_S
    # Active gRPC health checks (grpc.health.v1) against every upstream host.
    health_checks: bool = False
    # Server-streaming RPCs as Server-Sent Events (`data: {...}\n\n`) instead of one JSON array.
    stream_sse: bool = True
    # Hops in front of Envoy whose X-Forwarded-For entries are trusted (a cloud load balancer: 1).
    xff_num_trusted_hops: int = 0
    # The web console's static file server: when set, `/`, `/assets/*` and `/v1/openapi.json`
    # are proxied (HTTP/1.1) to it without authentication or transcoding (CONSOLE_ROUTES in
    # template.py). None: no console routes (they answer 404 like any unknown path).
    console_upstream: Upstream | None = None
    # Envoy's own statistics for Prometheus: a listener of its own (stats_address:stats_port)
    # that serves only GET /stats/prometheus, proxied to the admin port, which stays on loopback.
    # None: no such listener (the admin port still serves them, on loopback).
    stats_port: int | None = None
    stats_address: str = "127.0.0.1"
    # Tracing: Envoy's OpenTelemetry tracer, exporting spans over OTLP/gRPC to this collector,
    # and W3C trace context (traceparent) sent to every upstream, auth.Check included.
    # None: no tracing, no tracing work per request.
    otlp_collector: Upstream | None = None
    tracing_service_name: str = "vocalbridge-envoy"
    # Requests that start a trace here (a client's sampled traceparent is always followed).
    tracing_sampling_percent: float = 100.0

    def __post_init__(self) -> None:
        # Accept lists and dicts from callers, keep immutable copies.
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "cors_allowed_origins", tuple(self.cors_allowed_origins))
        object.__setattr__(self, "upstreams", MappingProxyType(dict(self.upstreams)))
        object.__setattr__(self, "route_timeouts_s", MappingProxyType(dict(self.route_timeouts_s)))
        object.__setattr__(self, "served_packages", MappingProxyType(dict(self.served_packages)))


def local_params(**overrides: Any) -> EnvoyParams:
    """Everything on 127.0.0.1 with the local default ports (DESIGN §1)."""
    port = overrides.get("listen_port", EnvoyParams.listen_port)
    # The console is served by this Envoy (same origin); these cover a console dev server
    # pointed at the gateway by its two usual local names.
    base: dict[str, Any] = {"cors_allowed_origins": (f"http://127.0.0.1:{port}", f"http://localhost:{port}")}
    base.update(overrides)
    return EnvoyParams(**base)


def k8s_params(namespace: str = "vocalbridge", cluster_domain: str = "cluster.local", **overrides: Any) -> EnvoyParams:
    """Headless Services `<name>.<namespace>.svc.<cluster_domain>`, resolved by DNS, one host per pod."""
    base: dict[str, Any] = {
        "listen_address": "0.0.0.0",
        "descriptor_set": K8S_DESCRIPTOR_SET,
        "upstreams": {
            name: Upstream(f"{name}.{namespace}.svc.{cluster_domain}", port) for name, port in SERVICE_PORTS.items()
        },
        "upstream_discovery": "dns",
        "health_checks": True,
        # The console image (web/Dockerfile) behind its own headless Service.
        "console_upstream": Upstream(f"console.{namespace}.svc.{cluster_domain}", CONSOLE_PORT),
        # Prometheus scrapes the pod's stats port; the admin port stays on the pod's loopback.
        "stats_port": EDGE_METRICS_PORT,
        "stats_address": "0.0.0.0",
    }
    base.update(overrides)
    return EnvoyParams(**base)


PROFILES: Mapping[str, Callable[..., EnvoyParams]] = MappingProxyType({"local": local_params, "k8s": k8s_params})
