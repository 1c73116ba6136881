"""`python -m vocalbridge_edge`: render the edge configuration for a profile, with overrides."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vocalbridge_edge.descriptors import check_descriptor_set, descriptor_names
from vocalbridge_edge.params import PROFILES, EnvoyParams, Upstream, k8s_params, local_params
from vocalbridge_edge.template import render_envoy_config

PROG = "python -m vocalbridge_edge"


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _upstream_override(text: str) -> tuple[str, Upstream]:
    name, sep, address = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return name, Upstream(*_address(address))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Render VocalBridge's Envoy configuration (JSON).")
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--out", default="-", help="output file; '-' (default) for stdout")
    parser.add_argument("--namespace", default="vocalbridge", help="k8s: namespace of the Services")
    parser.add_argument("--cluster-domain", default="cluster.local", help="k8s: cluster DNS domain")
    parser.add_argument("--listen", type=_address, metavar="HOST:PORT")
    parser.add_argument("--admin", type=_address, metavar="HOST:PORT")
    parser.add_argument("--descriptor-set", metavar="PATH")
    parser.add_argument(
        "--services",
        metavar="LIST",
        help="comma-separated full service names to transcode, or 'auto' for every "
        "vocalbridge.* service in the descriptor set",
    )
    parser.add_argument(
        "--upstream",
        type=_upstream_override,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="override one upstream (repeatable)",
    )
    parser.add_argument("--discovery", choices=("static", "dns"))
    parser.add_argument("--max-request-bytes", type=int)
    parser.add_argument("--max-response-bytes", type=int)
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allowed browser origin (repeatable; replaces the profile's)",
    )
    parser.add_argument("--health-checks", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--console-upstream", type=_address, metavar="HOST:PORT")
    parser.add_argument(
        "--stats", type=_address, metavar="HOST:PORT", help="serve GET /stats/prometheus (Prometheus) here"
    )
    parser.add_argument("--no-stats", action="store_true", help="no stats listener (the profile's k8s has one)")
    parser.add_argument(
        "--otlp-collector",
        type=_address,
        metavar="HOST:PORT",
        help="trace requests (OpenTelemetry, W3C trace context) and export spans over OTLP/gRPC here",
    )
    parser.add_argument("--tracing-sampling-percent", type=float, metavar="PERCENT")
    parser.add_argument("--no-check", action="store_true", help="skip checking the descriptor set")
    return parser


def _params(args: argparse.Namespace) -> EnvoyParams:
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen_address"], overrides["listen_port"] = args.listen
    if args.admin:
        overrides["admin_address"], overrides["admin_port"] = args.admin
    if args.descriptor_set:
        overrides["descriptor_set"] = str(Path(args.descriptor_set).resolve())
    if args.discovery:
        overrides["upstream_discovery"] = args.discovery
    if args.max_request_bytes is not None:
        overrides["max_request_bytes"] = args.max_request_bytes
    if args.max_response_bytes is not None:
        overrides["max_response_bytes"] = args.max_response_bytes
    if args.cors_origin is not None:
        overrides["cors_allowed_origins"] = tuple(args.cors_origin)
    if args.health_checks is not None:
        overrides["health_checks"] = args.health_checks
    if args.console_upstream:
        overrides["console_upstream"] = Upstream(*args.console_upstream)
    if args.stats:
        overrides["stats_address"], overrides["stats_port"] = args.stats
    if args.no_stats:
        overrides["stats_port"] = None
    if args.otlp_collector:
        overrides["otlp_collector"] = Upstream(*args.otlp_collector)
    if args.tracing_sampling_percent is not None:
        overrides["tracing_sampling_percent"] = args.tracing_sampling_percent

    if args.profile == "k8s":
        params = k8s_params(namespace=args.namespace, cluster_domain=args.cluster_domain, **overrides)
    else:
        params = local_params(**overrides)
    if args.upstream:
        params = dataclasses.replace(params, upstreams={**params.upstreams, **dict(args.upstream)})
    if args.services == "auto":
        found, _ = descriptor_names(params.descriptor_set)
        services = tuple(s for s in found if s.startswith("vocalbridge."))
        params = dataclasses.replace(params, services=services)
    elif args.services:
        params = dataclasses.replace(params, services=tuple(s.strip() for s in args.services.split(",") if s.strip()))
    return params


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    params = _params(args)
    try:
        text = render_envoy_config(params)
    except ValueError as exc:
        parser.error(str(exc))
    # The k8s descriptor path exists only inside the pod; check what can be checked here.
    if not args.no_check and os.path.exists(params.descriptor_set):
        for problem in check_descriptor_set(params):
            print(f"{PROG}: warning: {problem}", file=sys.stderr)  # noqa: T201 - a CLI warning

    if args.out == "-":
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.out), text)
    return 0


def write_atomically(out: Path, text: str) -> None:
    """Replace a regular file atomically (a running Envoy never reads half a file); write
    anything else (a device such as /dev/null, a pipe) in place."""
    if out.exists() and not out.is_file():
        with open(out, "w") as f:
            f.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
