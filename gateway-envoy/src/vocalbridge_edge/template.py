"""The Envoy edge configuration of VocalBridge: one template for every deployment.

`build_envoy_config` builds the Envoy bootstrap as plain data; read it top-down like a YAML file:
listener, HTTP filters, routes, local replies, clusters. `render_envoy_config` writes it as JSON,
which Envoy reads like YAML. Only `EnvoyParams` (params.py) differs between deployments.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vocalbridge_common.errors import ERROR_DOMAIN
from vocalbridge_common.headers import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    EDGE_SECRET_HEADER,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    IDENTITY_HEADER,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADER_COUNT,
    REQUEST_ID_HEADER,
    SESSION_HEADER,
)
from vocalbridge_edge import openai_routes
from vocalbridge_edge.params import EnvoyParams, Upstream

# A piece of Envoy configuration, as JSON-shaped data.
Config = dict[str, Any]

CORS_ALLOW_HEADERS = (
    AUTHORIZATION_HEADER,
    API_KEY_HEADER,
    "content-type",
    IDEMPOTENCY_KEY_HEADER,
    REQUEST_ID_HEADER,
    SESSION_HEADER,
)
CORS_EXPOSE_HEADERS = (IDEMPOTENT_REPLAYED_HEADER, REQUEST_ID_HEADER)
CORS_ALLOW_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")
# What a gRPC client proper sends (the Content-Type of gRPC over HTTP/2), as RE2.
GRPC_CONTENT_TYPE = r"application/grpc([+;].*)?"
# The request id in Envoy's substitution format (%REQ(...)%) for log lines and error bodies.
REQUEST_ID = f"%REQ({REQUEST_ID_HEADER.upper()})%"

# Envoy's own limit on request headers may be at most this (its codec's maximum).
MAX_CODEC_HEADERS_KB = 8192
# Filter names; the same strings key the per-route configs below.
HEADER_MUTATION = "envoy.filters.http.header_mutation"
CORS = "envoy.filters.http.cors"
LUA = "envoy.filters.http.lua"
BUFFER = "envoy.filters.http.buffer"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
ROUTER = "envoy.filters.http.router"
NO_CLUSTER = "no_such_route"
# Clusters of Envoy's own: its admin port (for the stats listener) and the OTLP collector.
ADMIN_CLUSTER = "edge_admin"
OTLP_CLUSTER = "otlp_collector"
STATS_PATH = "/stats/prometheus"
# Paths served by the console's static file server (vocalbridge_devstack.static). The app uses
# hash routing (/#/agents), so the document itself is only ever requested as `/`.
CONSOLE_ROUTES: tuple[tuple[str, Config], ...] = (
    ("index", {"path": "/"}),
    ("assets", {"prefix": "/assets/"}),
    ("openapi", {"path": "/v1/openapi.json"}),
)


def render_envoy_config(params: EnvoyParams) -> str:
    """The Envoy bootstrap configuration as JSON text."""
    return json.dumps(build_envoy_config(params), indent=2) + "\n"


def build_envoy_config(params: EnvoyParams) -> Config:
    """The Envoy bootstrap configuration as a dict (what render_envoy_config serialises)."""
    _check(params)
    return {
        "admin": {
            "address": _socket_address(params.admin_address, params.admin_port),
        },
        "static_resources": {
            "listeners": [_listener(params)] + ([_stats_listener(params)] if params.stats_port is not None else []),
            "clusters": [_cluster(name, up, params) for name, up in params.upstreams.items()]
            + ([_console_cluster(params.console_upstream, params)] if params.console_upstream else [])
            + (
                [_plain_cluster(ADMIN_CLUSTER, Upstream("127.0.0.1", params.admin_port))]
                if params.stats_port is not None
                else []
            )
            + ([_otlp_cluster(params.otlp_collector)] if params.otlp_collector else []),
        },
        # Envoy's own log lines (stderr) as JSON too, like the access log and the services.
        "application_log_config": {
            "log_format": {
                "json_format": {
                    "time": "%Y-%m-%dT%T.%eZ",
                    "level": "%l",
                    "logger": "envoy.%n",
                    "message": "%j",
                }
            }
        },
        # Envoy warns at start-up when nothing bounds the number of client connections.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }


def envoy_command(config_path: str | Path, envoy: str = "envoy", log_level: str = "warning") -> list[str]:
    """The argv to start Envoy with a rendered file. --disable-hot-restart lets several Envoys
    (make run, e2e tests, bench) share a machine; the access log is flushed every second instead
    of every ten."""
    return [
        envoy,
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--log-level",
        log_level,
        "--file-flush-interval-msec",
        "1000",
    ]


def _listener(p: EnvoyParams) -> Config:
    return {
        "name": "edge",
        "address": _socket_address(p.listen_address, p.listen_port),
        # Must hold what the transcoder buffers (a whole JSON request or response).
        "per_connection_buffer_limit_bytes": max(p.max_request_bytes, p.max_response_bytes) + 64 * 1024,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _http_connection_manager(p),
                    }
                ]
            }
        ],
    }


def _http_connection_manager(p: EnvoyParams) -> Config:
    manager: Config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        # HTTP/1.1 (JSON clients) and h2c (gRPC clients) on the same port.
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": p.xff_num_trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        # x-request-id: keep the client's, generate one when missing, always echo it back.
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "server_name": "vocalbridge",
        "stream_idle_timeout": "300s",
        # The codec's limits on a client's headers, above what auth.Check allows (16 KiB, 100
        # headers: a 431 for either HTTP version, a gRPC status for a gRPC client). Past these the
        # codec itself answers: 431 over HTTP/1.x (JSON, below), a stream reset over HTTP/2.
        "max_request_headers_kb": p.max_request_headers_kb,
        "common_http_protocol_options": {"max_headers_count": p.max_request_headers},
        "access_log": [_access_log()],
        "http_filters": _http_filters(p),
        "route_config": _route_config(p),
        "local_reply_config": _local_reply_config(p),
    }
    if p.otlp_collector is not None:
        manager["tracing"] = _tracing(p)
    return manager


def _tracing(p: EnvoyParams) -> Config:
    """Envoy's OpenTelemetry tracer: a server span per request (a client's traceparent is
    continued), a span per upstream call, W3C traceparent on every upstream request and on the
    ext_authz call to auth.Check; spans go to the collector over OTLP/gRPC."""
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": p.tracing_service_name,
            },
        },
        "random_sampling": {"value": p.tracing_sampling_percent},
        "spawn_upstream_span": True,
    }


def _stats_listener(p: EnvoyParams) -> Config:
    """GET /stats/prometheus on a port of its own, proxied to the admin port on loopback: the one
    admin page Prometheus needs, without exposing the rest (which can stop Envoy)."""
    assert p.stats_port is not None
    return {
        "name": "stats",
        "address": _socket_address(p.stats_address, p.stats_port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "stats",
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": "stats",
                                "virtual_hosts": [
                                    {
                                        "name": "stats",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {
                                                    "path": STATS_PATH,
                                                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                                                },
                                                "route": {"cluster": ADMIN_CLUSTER, "timeout": "10s"},
                                            },
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 404,
                                                    "body": {"inline_string": f"only GET {STATS_PATH}\n"},
                                                },
                                            },
                                        ],
                                    }
                                ],
                            },
                            "http_filters": [
                                {
                                    "name": ROUTER,
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


# Order matters; see README.md.
def _http_filters(p: EnvoyParams) -> list[Config]:
    return [
        {
            # 1. Drop any client-supplied identity header before anything can trust it, and the
            #    headers the transcoder sets (x-envoy-original-method tells JSON from gRPC
            #    requests below; Envoy already strips a client's x-envoy-original-path).
            "name": HEADER_MUTATION,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "request_mutations": [
                        {"remove": h} for h in (IDENTITY_HEADER, "x-envoy-original-method", "x-envoy-original-path")
                    ]
                },
            },
        },
        {
            # 2. CORS for the web console; the policy itself is on the virtual host. Preflights
            #    are answered here, before authentication (browsers send no credentials on them).
            "name": CORS,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
        {
            # 3. Errors in OpenAI's shape on the OpenAI-compatible routes only (openai_routes.py):
            #    off by default, enabled by the routes of those paths. It sits before ext_authz
            #    and the body limit so that their refusals pass through it on the way out.
            "name": LUA,
            "disabled": True,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "source_codes": {
                    openai_routes.LUA_CODE_NAME: {"inline_string": openai_routes.lua_source(_openai_local_replies(p))}
                },
            },
        },
        {
            # 4. Body size limit for JSON requests. The transcoder's own max_request_body_size
            #    bounds only what it holds unparsed at once: over HTTP/1.1 a 1.1 MB body is
            #    refused, over HTTP/2 (16 KB frames) it is not. This filter counts the whole
            #    body. It is off by default and enabled only on the route JSON requests match
            #    before transcoding (not_found), so gRPC streams are never buffered.
            "name": BUFFER,
            "disabled": True,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": p.max_request_bytes,
            },
        },
        {
            # 5. Authentication, per-RPC authorisation and strict JSON validation by auth.Check
            #    (fail closed). It runs before the transcoder so that it sees what the client
            #    sent: the gRPC method of a gRPC call, or the HTTP method, path and JSON body of
            #    a JSON request (the body only on the JSON route, see _route_config). The
            #    transcoder would drop unknown JSON fields silently; Check refuses them with 400.
            "name": EXT_AUTHZ,
            "typed_config": _ext_authz(p),
        },
        {
            # 6. JSON/HTTP → gRPC. Rewrites :path to /<package>.<Service>/<Method> and clears the
            #    route cache, so the request is routed by its gRPC method for every client.
            "name": TRANSCODER,
            "typed_config": _transcoder(p),
        },
        {
            "name": ROUTER,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def _transcoder(p: EnvoyParams) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "proto_descriptor": p.descriptor_set,
        "services": list(p.services),
        "auto_mapping": False,
        # Route on the transcoded gRPC path (the default; explicit because routing depends on it).
        "match_incoming_request_route": False,
        # google.rpc.Status from grpc-status-details-bin → JSON body and the matching HTTP status.
        "convert_grpc_status": True,
        "query_param_unescape_plus": True,
        "max_request_body_size": p.max_request_bytes,
        "max_response_body_size": p.max_response_bytes,
        "print_options": {
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
            "stream_sse_style_delimited": p.stream_sse,
        },
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
    }


def _ext_authz(p: EnvoyParams) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": p.authz_upstream},
            "timeout": _duration(p.authz_timeout_s),
            # Check answers the edge only: the secret comes from Envoy's environment (a k8s
            # Secret, the dev stack's var/), never from this file. Unset, Envoy sends "-", Check
            # refuses, and every request is refused with 503 (fail closed).
            "initial_metadata": [{"key": EDGE_SECRET_HEADER, "value": f"%ENVIRONMENT({p.edge_secret_env})%"}],
        },
        # Fail closed: if auth cannot answer, nothing passes.
        "failure_mode_allow": False,
        # ... and say so honestly: auth unreachable is 503, not 403.
        "status_on_error": {"code": "ServiceUnavailable"},
        "include_peer_certificate": False,
        # Each header occurrence apart (header_map), so Check can refuse one sent twice that
        # must be sent once (an Idempotency-Key, a key); the joined map would hide it.
        "encode_raw_headers": True,
        # Every request header (authorization, x-api-key, x-request-id, ...) is sent to Check.
        # The body is sent only for JSON requests (per route, below).
    }


def _route_config(p: EnvoyParams) -> Config:
    routes: list[Config] = [
        {
            # Liveness of the edge itself, answered by Envoy; no key needed. The services'
            # grpc.health.v1 is deliberately not routed from outside.
            "name": "healthz",
            "match": {"path": "/healthz", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
            "typed_per_filter_config": _bypass(TRANSCODER, EXT_AUTHZ),
        },
    ]
    if p.console_upstream is not None:
        # The console's files and the OpenAPI document: public, so no key (ext_authz off on
        # these routes only) and nothing to transcode. Everything else under / still needs one.
        routes.extend(
            {
                "name": f"console_{name}",
                "match": match,
                "route": {"cluster": "console", "timeout": "15s"},
                "typed_per_filter_config": _bypass(TRANSCODER, EXT_AUTHZ),
            }
            for name, match in CONSOLE_ROUTES
        )
    # Each upstream's own package, then the packages an upstream serves besides (the OpenAI API).
    packages = [(name, name) for name in p.upstreams] + [
        (package, upstream) for package, upstream in p.served_packages.items() if upstream in p.upstreams
    ]
    for name, cluster in packages:
        timeout_s = p.route_timeouts_s.get(name, p.route_timeouts_s.get(cluster, p.default_route_timeout_s))
        timeout = _duration(timeout_s)
        route: Config = {
            "name": name,
            # The only way in: gRPC methods of the service's own package. Transcoded JSON requests
            # arrive here with that path too. envoy.service.auth.v3.Authorization and
            # grpc.health.v1.Health match no route, so they are unreachable from outside.
            "match": {"prefix": f"/vocalbridge.{name}.v1."},
            "route": {
                "cluster": cluster,
                # The time limit of a call. (With max_stream_duration set, the route "timeout"
                # is not used.) A gRPC client's grpc-timeout is honoured, capped at the route's
                # limit; JSON requests get the route's limit. 0 means no limit.
                "max_stream_duration": {"max_stream_duration": timeout, "grpc_timeout_header_max": timeout},
                # Only retries that cannot run a request twice.
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,reset-before-request",
                    "num_retries": 2,
                },
            },
        }
        if timeout_s > 0:
            # JSON clients cannot send a deadline; give the service the route's, so that it
            # propagates it on its own outbound calls. A gRPC client's own deadline is kept.
            route["request_headers_to_add"] = [
                {
                    "header": {"key": "grpc-timeout", "value": _grpc_timeout(timeout_s)},
                    "append_action": "ADD_IF_ABSENT",
                }
            ]
        if name == openai_routes.PACKAGE:
            # A transcoded request's response is encoded after it was routed here: the Lua filter
            # (enabled by the paths' routes below) finds its code on this route. A native gRPC
            # client's response passes through it unchanged. No stream may idle past the limit
            # either (a completion is silent until its provider answers).
            route["typed_per_filter_config"] = {LUA: _lua_per_route()}
            route["route"]["idle_timeout"] = timeout
        routes.append(route)
    if openai_routes.PACKAGE in p.served_packages:
        # The OpenAI-compatible API's HTTP paths, before transcoding: raw bodies (Check reads no
        # body: the service validates it), the body limit, and OpenAI's error shape (Lua).
        routes.extend(
            {
                "name": f"openai_{path.rsplit('/', 1)[-1]}",
                "match": {"path": path},
                "route": {"cluster": NO_CLUSTER, "cluster_not_found_response_code": "NOT_FOUND"},
                "typed_per_filter_config": {
                    LUA: {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "disabled": False,
                        "config": _lua_per_route(),
                    },
                    BUFFER: {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                        "buffer": {"max_request_bytes": p.max_request_bytes},
                    },
                },
            }
            for path in openai_routes.PATHS
        )
    routes.append(
        {
            # JSON requests match this route first, before the transcoder rewrites their path: here
            # the whole body is buffered (size limit) and sent to Check, which refuses unknown
            # methods (404) and invalid bodies (400). A transcoded request is routed again by its
            # gRPC path; what is left ends here with 404 (JSON body from local_reply_config). The
            # CORS filter only works on a forwarding route (not on a direct_response), hence a
            # route to a cluster that deliberately does not exist: the router answers 404 itself.
            "name": "json_and_not_found",
            "match": {"prefix": "/"},
            "route": {"cluster": NO_CLUSTER, "cluster_not_found_response_code": "NOT_FOUND"},
            "typed_per_filter_config": {
                EXT_AUTHZ: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                    "check_settings": {
                        "with_request_body": {
                            "max_request_bytes": p.max_request_bytes,
                            "allow_partial_message": False,
                            "pack_as_bytes": True,
                        }
                    },
                },
                BUFFER: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                    "buffer": {"max_request_bytes": p.max_request_bytes},
                },
            },
        }
    )
    vhost: Config = {"name": "vocalbridge", "domains": ["*"], "routes": routes}
    if p.cors_allowed_origins:
        vhost["typed_per_filter_config"] = {CORS: _cors_policy(p.cors_allowed_origins)}
    # Off so that the not_found route may name a missing cluster; the renderer names the others.
    return {"name": "edge", "validate_clusters": False, "virtual_hosts": [vhost]}


def _cors_policy(origins: Iterable[str]) -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in origins],
        "allow_methods": ",".join(CORS_ALLOW_METHODS),
        "allow_headers": ",".join(CORS_ALLOW_HEADERS),
        "expose_headers": ",".join(CORS_EXPOSE_HEADERS),
        "max_age": "600",
    }


def _lua_per_route() -> Config:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
        "name": openai_routes.LUA_CODE_NAME,
    }


def _bypass(*filters: str) -> Config:
    config: Config = {}
    for name in filters:
        if name == EXT_AUTHZ:
            config[name] = {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "disabled": True,
            }
        else:
            config[name] = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    return config


# --------------------------------------------------------------------------------------------
# Errors Envoy itself generates, as google.rpc.Status JSON (DESIGN §4 Errors)

# Local replies are matched by HTTP status plus Envoy's response code details (via CEL), in
# order; the first match wins. (HTTP status, details test, gRPC code, reason, message, field).
_LocalReply = tuple[int, str | None, int, str, str | None, str | None]
_LOCAL_REPLIES: tuple[_LocalReply, ...] = (
    # The transcoder refused the query string or path bindings (headers phase).
    (
        400,
        "response.code_details.startsWith('early_grpc_json_transcode_failure')",
        3,
        "INVALID_REQUEST_PARAMETERS",
        None,
        "query",
    ),
    # The HTTP codec refused the request itself (a malformed request line or header).
    (
        400,
        "response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.')",
        3,
        "MALFORMED_REQUEST",
        "The request is not well-formed HTTP.",
        None,
    ),
    # Anything else Envoy refuses with 400: malformed JSON, wrong types (body phase).
    (400, None, 3, "INVALID_REQUEST_BODY", None, "body"),
    (404, None, 5, "NOT_FOUND", "No such method or resource path.", None),
    (413, None, 8, "REQUEST_TOO_LARGE", "The request is larger than the gateway accepts.", "body"),
    (
        431,
        None,
        8,
        "REQUEST_HEADERS_TOO_LARGE",
        "The request's headers are larger than the gateway accepts.",
        "headers",
    ),
    # Envoy's own 500s, e.g. a response larger than max_response_bytes (upstream 500s are
    # not local replies and keep the service's body).
    (500, None, 13, "GATEWAY_ERROR", "The gateway could not complete the request: %LOCAL_REPLY_BODY%", None),
    (502, None, 14, "SERVICE_UNAVAILABLE", "The service is unavailable; try again later.", None),
    (503, None, 14, "SERVICE_UNAVAILABLE", "The service is unavailable; try again later.", None),
    (504, None, 4, "DEADLINE_EXCEEDED", "The service did not answer in time.", None),
)
# Any other status Envoy answers with by itself, from this one up (first match wins).
_OTHER_LOCAL_REPLIES: tuple[_LocalReply, ...] = (
    (500, None, 13, "GATEWAY_ERROR", "The gateway could not complete the request.", None),
    (400, None, 3, "REQUEST_REFUSED", "The gateway refused the request.", None),
)


def _openai_local_replies(p: EnvoyParams) -> list[tuple[int, str, str]]:
    """Envoy's own replies (_LOCAL_REPLIES) as the OpenAI-compatible routes word them: the same
    reasons, without Envoy's substitutions (the Lua filter writes the body as it is). On those
    routes a 400 of Envoy's is about the query or the path: the body is raw bytes."""
    plain = {
        400: "Invalid request: the query or the path is not what this method accepts.",
        413: f"The request is larger than the gateway accepts (at most {p.max_request_bytes} bytes).",
        431: f"The request's headers are larger than the gateway accepts ({_header_limits()}).",
        500: "The gateway could not complete the request.",
    }
    return [
        (status, reason, plain.get(status) or message or reason) for status, _, _, reason, message, _ in _LOCAL_REPLIES
    ]


def _local_reply_config(p: EnvoyParams) -> Config:
    return {
        "mappers": [
            # Left as they are (a match with no override stops the search):
            # - ext_authz denials: auth.Check already wrote the google.rpc.Status JSON body.
            {"filter": _cel("response.code_details == 'ext_authz_denied'")},
            # - native gRPC clients: Envoy puts the body into grpc-message; keep its plain text there.
            #   Transcoded requests also carry content-type application/grpc by now, but only they
            #   have x-envoy-original-method (set by the transcoder). gRPC proper only
            #   (application/grpc, +proto, ;charset): gRPC-Web and other look-alikes get JSON.
            {
                "filter": {
                    "and_filter": {
                        "filters": [
                            _header_filter(
                                {
                                    "name": "content-type",
                                    "string_match": {"safe_regex": {"regex": GRPC_CONTENT_TYPE}},
                                }
                            ),
                            _header_filter({"name": "x-envoy-original-method", "present_match": False}),
                        ]
                    }
                }
            },
            # Envoy's own errors for everyone else: google.rpc.Status JSON like the services' errors.
            # Upstream gRPC errors are not local replies; the transcoder converts those.
            *_unavailable_mappers(p),
            *(_local_reply_mapper(*spec, p) for spec in _LOCAL_REPLIES),
            # Whatever else Envoy may answer by itself (405, 408, a codec's 400 …): still JSON.
            *(_local_reply_mapper(*spec, p, op="GE") for spec in _OTHER_LOCAL_REPLIES),
        ]
    }


def _unavailable_mappers(p: EnvoyParams) -> list[Config]:
    """503 naming the service that is not there (not deployed, not running, no healthy host):
    the voice service of a deployment without one, auth when Check cannot be reached. The
    reason stays SERVICE_UNAVAILABLE (retry later); ErrorInfo's metadata names the service."""
    services = [(f"xds.cluster_name == '{name}'", name) for name in p.upstreams]
    services.append(("response.code_details.startsWith('ext_authz_error')", p.authz_upstream))
    return [
        _local_reply_mapper(
            503,
            test,
            14,
            "SERVICE_UNAVAILABLE",
            f"The {name} service is unavailable; try again later.",
            None,
            p,
            metadata={"service": name},
        )
        for test, name in services
    ]


def _header_limits() -> str:
    """What clients are told (auth.Check's limits; the codec's are above them)."""
    return f"at most {MAX_REQUEST_HEADER_BYTES // 1024} KiB and {MAX_REQUEST_HEADER_COUNT} headers in all"


def _local_reply_mapper(
    http_status: int,
    details_test: str | None,
    grpc_code: int,
    reason: str,
    message: str | None,
    field: str | None,
    p: EnvoyParams,
    *,
    op: str = "EQ",
    metadata: Config | None = None,
) -> Config:
    info: Config = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": ERROR_DOMAIN}
    if metadata:
        info["metadata"] = metadata
    details: list[Config] = [info, {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": REQUEST_ID}]
    if http_status == 413:
        description = f"must be at most {p.max_request_bytes} bytes"
    elif http_status == 431:
        # Never Envoy's own text here: it could name the headers (internal ones among them).
        description = f"must be {_header_limits()}"
    elif field is not None:
        # Envoy's own text (the transcoder's parse error); json_format escapes quotes and newlines.
        message, description = "Invalid request: %LOCAL_REPLY_BODY%", "%LOCAL_REPLY_BODY%"
    if field is not None:
        details.insert(
            1,
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": description}],
            },
        )
    status = {
        "status_code_filter": {
            "comparison": {
                "op": op,
                "value": {
                    "default_value": http_status,
                    "runtime_key": f"vocalbridge.local_reply.status_{'' if op == 'EQ' else 'from_'}{http_status}",
                },
            }
        }
    }
    return {
        "filter": {"and_filter": {"filters": [status, _cel(details_test)]}} if details_test else status,
        "body_format_override": {
            "json_format": {"code": grpc_code, "message": message, "details": details},
            "content_type": "application/json",
            # A value Envoy does not have (the request id of a request whose headers were
            # refused) is left out rather than written as null.
            "omit_empty_values": True,
        },
    }


def _cel(expression: str) -> Config:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression,
            },
        }
    }


def _header_filter(matcher: Config) -> Config:
    return {"header_filter": {"header": matcher}}


def _access_log() -> Config:
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "request_id": REQUEST_ID,
                    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
                    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                    "grpc_method": "%REQ(:PATH)%",
                    "protocol": "%PROTOCOL%",
                    "status": "%RESPONSE_CODE%",
                    "grpc_status": "%GRPC_STATUS_NUMBER%",
                    "flags": "%RESPONSE_FLAGS%",
                    "details": "%RESPONSE_CODE_DETAILS%",
                    "duration_ms": "%DURATION%",
                    "upstream_cluster": "%UPSTREAM_CLUSTER%",
                    "upstream_host": "%UPSTREAM_HOST%",
                    "bytes_in": "%BYTES_RECEIVED%",
                    "bytes_out": "%BYTES_SENT%",
                    # auth.Check returns dynamic_metadata {tenant, key} with every allowed request.
                    "tenant": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:tenant)%",
                    "key": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:key)%",
                    "traceparent": "%REQ(TRACEPARENT)%",
                    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    "user_agent": "%REQ(USER-AGENT)%",
                }
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Clusters


def _cluster(name: str, up: Upstream, p: EnvoyParams) -> Config:
    cluster: Config = {
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(up.host, up.port)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Notice dead peers (a killed pod) without waiting for TCP.
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    }
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 1024,
                    "max_pending_requests": 1024,
                    "max_requests": 4096,
                    "max_retries": 16,
                    "track_remaining": True,
                }
            ]
        },
        # Eject a host (a pod) that keeps failing, for a while; never all of them.
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "interval": "5s",
            "base_ejection_time": "15s",
            "max_ejection_percent": 50,
        },
    }
    if p.upstream_discovery == "static":
        cluster["type"] = "STATIC" if _is_ip(up.host) else "STRICT_DNS"
    else:
        cluster["type"] = "STRICT_DNS"
        cluster["dns_refresh_rate"] = _duration(p.dns_refresh_s)
        cluster["respect_dns_ttl"] = False
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if p.health_checks:
        cluster["health_checks"] = [
            {
                "timeout": "1s",
                "interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "no_traffic_interval": "15s",
                "grpc_health_check": {},  # grpc.health.v1.Health/Check, overall server status
            }
        ]
    return cluster


def _plain_cluster(name: str, up: Upstream) -> Config:
    return {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC" if _is_ip(up.host) else "STRICT_DNS",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(up.host, up.port)}}]}],
        },
    }


def _otlp_cluster(up: Upstream) -> Config:
    """The OpenTelemetry collector's OTLP/gRPC port (HTTP/2, plaintext)."""
    cluster = _plain_cluster(OTLP_CLUSTER, up)
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return cluster


def _console_cluster(up: Upstream, p: EnvoyParams) -> Config:
    return {
        "name": "console",
        "connect_timeout": "1s",
        "type": "STATIC" if p.upstream_discovery == "static" and _is_ip(up.host) else "STRICT_DNS",
        "load_assignment": {
            "cluster_name": "console",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(up.host, up.port)}}]}],
        },
    }


# --------------------------------------------------------------------------------------------
# Helpers


def _socket_address(host: str, port: int) -> Config:
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _grpc_timeout(seconds: float) -> str:
    """gRPC's TimeoutValue: at most 8 digits and a unit."""
    millis = int(seconds * 1000)
    return f"{millis}m" if millis < 10**8 else f"{min(int(seconds), 10**8 - 1)}S"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _check(p: EnvoyParams) -> None:
    if p.upstream_discovery not in ("static", "dns"):
        raise ValueError(f"upstream_discovery must be 'static' or 'dns', not {p.upstream_discovery!r}")
    if p.authz_upstream not in p.upstreams:
        raise ValueError(f"authz_upstream {p.authz_upstream!r} is not one of the upstreams {sorted(p.upstreams)}")
    if not p.services:
        raise ValueError("no services to transcode")
    for package, upstream in p.served_packages.items():
        if package in p.upstreams or upstream not in p.upstreams:
            raise ValueError(f"package {package!r} must be served by one of the upstreams {sorted(p.upstreams)}")
    for service in p.services:
        parts = service.split(".")
        if len(parts) != 4 or parts[0] != "vocalbridge" or parts[1] not in (*p.upstreams, *p.served_packages):
            raise ValueError(
                f"service {service!r} is not vocalbridge.<upstream>.v1.<Service> with an upstream in {sorted(p.upstreams)}"
                f" (or a package one serves: {sorted(p.served_packages)})"
            )
    if p.max_request_bytes <= 0 or p.max_response_bytes <= 0:
        raise ValueError("max_request_bytes and max_response_bytes must be positive")
    if not MAX_REQUEST_HEADER_BYTES <= p.max_request_headers_kb * 1024 <= MAX_CODEC_HEADERS_KB * 1024 or (
        p.max_request_headers < MAX_REQUEST_HEADER_COUNT
    ):
        raise ValueError(
            f"max_request_headers_kb must be from {MAX_REQUEST_HEADER_BYTES // 1024} to {MAX_CODEC_HEADERS_KB} and"
            f" max_request_headers at least {MAX_REQUEST_HEADER_COUNT}: auth.Check's limits, which clients are"
            " told, must be the first a request meets"
        )
    if not p.edge_secret_env.isidentifier():
        raise ValueError(f"edge_secret_env must be an environment variable's name, not {p.edge_secret_env!r}")
    if "console" in p.upstreams and p.console_upstream is not None:
        raise ValueError("'console' is reserved for console_upstream")
    for reserved in (ADMIN_CLUSTER, OTLP_CLUSTER):
        if reserved in p.upstreams:
            raise ValueError(f"{reserved!r} is the name of one of Envoy's own clusters")
    if p.stats_port is not None and p.stats_port in (p.listen_port, p.admin_port):
        raise ValueError("stats_port must differ from the listen and admin ports")
