"""The bench's baseline Envoy (bench/echo) renders from the product's edge template: the ratio
'full stack / baseline' in `make bench` means nothing if the baseline cannot start, and the
template's checks change as the product's routes do."""

import json

from bench.echo import edge
from vocalbridge_edge import EXT_AUTHZ


def test_the_baseline_renders_the_edge_without_ext_authz_in_front_of_echo_only(tmp_path):
    descriptor_set = edge.build_descriptor_set(tmp_path / "echo.pb")
    config = json.loads(
        edge.render_baseline_config(listen_port=18080, admin_port=18081, echo_port=18082, descriptor_set=descriptor_set)
    )
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert EXT_AUTHZ not in {f["name"] for f in manager["http_filters"]}
    routes = [route for vhost in manager["route_config"]["virtual_hosts"] for route in vhost["routes"]]
    assert all(EXT_AUTHZ not in route.get("typed_per_filter_config", {}) for route in routes)
    clusters = {cluster["name"] for cluster in config["static_resources"]["clusters"]}
    assert "echo" in clusters and not clusters & {"conversation", "auth", "agents", "billing", "voice"}, clusters
    served = [route for route in routes if route.get("route", {}).get("cluster") == "echo"]
    assert served and all(f"/{edge.SERVICE}/".startswith(route["match"]["prefix"]) for route in served), served
