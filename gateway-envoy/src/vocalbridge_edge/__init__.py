"""The Envoy edge of VocalBridge: its configuration, rendered from one template for one machine
(`make run`, the end-to-end tests, the benchmarks) or for Kubernetes (deploy/k8s/render-envoy.sh).

    from vocalbridge_edge import local_params, render_envoy_config, envoy_command

`python -m vocalbridge_edge --help` is the command line. The ports, header names and error
domain come from the common library, so the edge and the services cannot disagree on them.
"""

from vocalbridge_edge.descriptors import check_descriptor_set, descriptor_names, http_services
from vocalbridge_edge.params import PROFILES, EnvoyParams, Upstream, k8s_params, local_params
from vocalbridge_edge.template import EXT_AUTHZ, build_envoy_config, envoy_command, render_envoy_config

__all__ = [
    "EXT_AUTHZ",
    "PROFILES",
    "EnvoyParams",
    "Upstream",
    "build_envoy_config",
    "check_descriptor_set",
    "descriptor_names",
    "envoy_command",
    "http_services",
    "k8s_params",
    "local_params",
    "render_envoy_config",
]
