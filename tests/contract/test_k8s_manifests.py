"""The Kubernetes manifests (deploy/k8s) render with kustomize and keep the rules that
CONVENTIONS.md ("Kubernetes") and DESIGN.md ask of them. The checks read the rendered objects, not
the source files, so patches in the overlays are covered too.

kustomize writes only YAML, and PyYAML is not a dependency. `kubectl patch --local` with an empty
merge patch turns each object into JSON without a cluster, so the standard library can parse it.
A missing kubectl fails these tests; it never skips them.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from vocalbridge_common import topology

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = "vocalbridge"
# Every backend and its port (DESIGN §1), from the one table the services, the stack runner and the
# edge renderer use. All five are deployed, so that Envoy's clusters resolve.
BACKENDS = dict(topology.SERVICE_PORTS)
# The calls that exist between pods (CONVENTIONS "Kubernetes"): nothing else may reach a backend.
EDGES = {("envoy", name) for name in BACKENDS} | {
    ("conversation", "agents"),
    ("conversation", "billing"),
    ("voice", "conversation"),
    ("voice", "agents"),
    ("voice", "billing"),
    ("agents", "voice"),
}
SECRET_NAME = "vocalbridge-secrets"
DESCRIPTOR_IN_IMAGE = "/etc/vocalbridge/vocalbridge.pb"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl (with its built-in kustomize) is needed to render deploy/k8s; it is not on PATH"
    return path


def _run(args: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


@cache
def _render(target: str) -> tuple:
    kubectl = _kubectl()
    yaml_text = _run([kubectl, "kustomize", str(K8S / target)])
    json_text = _run([kubectl, "patch", "--local", "-f", "-", "--type=merge", "-p", "{}", "-o", "json"], yaml_text)
    decoder, objects, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(json_text) and json_text[i].isspace():
            i += 1
        if i >= len(json_text):
            break
        obj, i = decoder.raw_decode(json_text, i)
        objects.append(obj)
    # Guard against the conversion silently dropping objects.
    assert len(objects) == len(re.findall(r"(?m)^kind: ", yaml_text)), "objects lost converting YAML to JSON"
    return tuple(objects)


def _of_kind(objects, kind: str) -> dict:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _label(obj, key="app.kubernetes.io/name"):
    return obj["metadata"].get("labels", {}).get(key)


def _backend_deployments(objects) -> dict:
    return {
        name: d
        for name, d in _of_kind(objects, "Deployment").items()
        if _label(d["spec"]["template"], "app.kubernetes.io/component") == "backend"
    }


def _grpc_port(container) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"]
    assert len(ports) == 1, f"container {container['name']} must declare exactly one port named grpc"
    return ports[0]


@pytest.fixture(params=OVERLAYS)
def rendered(request):
    return request.param, _render(f"overlays/{request.param}")


def test_base_renders():
    kinds = {o["kind"] for o in _render("base")}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Namespace",
    } <= kinds


def test_everything_is_in_the_namespace(rendered):
    _, objects = rendered
    assert _of_kind(objects, "Namespace").keys() == {NAMESPACE}
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_backend_is_deployed_with_its_service_account_pdb_and_headless_service(rendered):
    _, objects = rendered
    deployments = _backend_deployments(objects)
    services = _of_kind(objects, "Service")
    accounts = _of_kind(objects, "ServiceAccount")
    pdbs = _of_kind(objects, "PodDisruptionBudget")
    assert deployments.keys() == BACKENDS.keys()
    for name, port in BACKENDS.items():
        template = deployments[name]["spec"]["template"]
        main = next(c for c in template["spec"]["containers"] if c["name"] == name)
        assert _grpc_port(main) == port, name

        service = services[name]["spec"]
        assert service.get("clusterIP") == "None", f"Service {name} must be headless (clusterIP: None)"
        assert [(p["name"], p["port"]) for p in service["ports"]] == [("grpc", port)], name
        labels = template["metadata"]["labels"]
        assert service["selector"].items() <= labels.items(), f"Service {name} does not select its pods"

        assert template["spec"]["serviceAccountName"] == name and name in accounts
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"PDB {name}"
    assert "envoy" in pdbs and "envoy" in accounts


def _port_drift(objects) -> list[str]:
    """Every place the manifests write a port number, compared with topology (the YAML cannot
    import it): each backend's Service, container port, VB_<SVC>_PORT, probes and the
    VB_<SVC>_ADDRESS its clients use; Envoy's Service and container port."""
    problems = []
    services = _of_kind(objects, "Service")
    deployments = _of_kind(objects, "Deployment")
    config = {k: v for c in _of_kind(objects, "ConfigMap").values() for k, v in c.get("data", {}).items()}

    def expect(where: str, found: object, port: int) -> None:
        if found != port:
            problems.append(f"{where}: {found!r}, topology says {port}")

    for name, port in topology.SERVICE_PORTS.items():
        metrics_port = topology.METRICS_PORTS[name]
        for p in services[name]["spec"]["ports"]:
            expect(f"Service {name} port {p.get('name')}", p["port"], port)
        spec = deployments[name]["spec"]["template"]["spec"]
        main = next(c for c in spec["containers"] if c["name"] == name)
        for p in main.get("ports", []):
            expected = metrics_port if p.get("name") == "metrics" else port
            expect(f"Deployment {name} containerPort {p.get('name')}", p["containerPort"], expected)
        env = {e["name"]: e.get("value") for e in main.get("env", [])}
        expect(f"Deployment {name} VB_{name.upper()}_PORT", env.get(f"VB_{name.upper()}_PORT"), str(port))
        expect(
            f"Deployment {name} VB_{name.upper()}_METRICS_PORT",
            env.get(f"VB_{name.upper()}_METRICS_PORT"),
            str(metrics_port),
        )
        annotations = deployments[name]["spec"]["template"]["metadata"].get("annotations", {})
        expect(f"Deployment {name} prometheus.io/port", annotations.get("prometheus.io/port"), str(metrics_port))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in main:
                expect(f"Deployment {name} {probe}", main[probe].get("grpc", {}).get("port"), port)
        address = config.get(f"VB_{name.upper()}_ADDRESS")
        expect(f"VB_{name.upper()}_ADDRESS", address and int(address.rpartition(":")[2]), port)
    for p in services["envoy"]["spec"]["ports"]:
        expect(f"Service envoy port {p.get('name')}", p["port"], topology.EDGE_PORT)
    (envoy,) = deployments["envoy"]["spec"]["template"]["spec"]["containers"]
    edge_ports = {"http": topology.EDGE_PORT, "metrics": topology.EDGE_METRICS_PORT}
    for p in envoy["ports"]:
        expect(f"Deployment envoy containerPort {p.get('name')}", p["containerPort"], edge_ports.get(p.get("name")))
    annotations = deployments["envoy"]["spec"]["template"]["metadata"].get("annotations", {})
    expect(
        "Deployment envoy prometheus.io/port", annotations.get("prometheus.io/port"), str(topology.EDGE_METRICS_PORT)
    )
    return problems


def test_every_port_in_the_manifests_is_the_topologys(rendered):
    overlay, objects = rendered
    assert _port_drift(objects) == [], overlay


def test_port_drift_is_caught():
    """A port edited in the YAML alone (here: the agents Service and its probe) is reported."""
    objects = copy.deepcopy(_render("base"))
    agents_service = _of_kind(objects, "Service")["agents"]
    agents_service["spec"]["ports"][0]["port"] += 1
    agents = _of_kind(objects, "Deployment")["agents"]["spec"]["template"]["spec"]["containers"][0]
    agents["readinessProbe"]["grpc"]["port"] += 1
    problems = _port_drift(objects)
    assert len(problems) == 2, problems
    assert any(p.startswith("Service agents port grpc") for p in problems), problems
    assert any(p.startswith("Deployment agents readinessProbe") for p in problems), problems


def test_backends_have_native_grpc_probes_and_run_their_migrations_first(rendered):
    _, objects = rendered
    for name, deployment in _backend_deployments(objects).items():
        spec = deployment["spec"]["template"]["spec"]
        main = next(c for c in spec["containers"] if c["name"] == name)
        port = _grpc_port(main)
        for probe in ("readinessProbe", "livenessProbe"):
            assert main.get(probe, {}).get("grpc", {}).get("port") == port, f"{name}: {probe} must be grpc on {port}"
        assert main.get("args", ["serve"]) == ["serve"], name
        migrate = [c for c in spec.get("initContainers", []) if c.get("args") == ["migrate"]]
        assert len(migrate) == 1, f"{name}: needs one init container running `migrate`"
        assert migrate[0]["image"] == main["image"], f"{name}: migrations must come from the same image"


def test_every_deployment_is_hardened_and_bounded(rendered):
    overlay, objects = rendered
    deployments = _of_kind(objects, "Deployment")
    assert "envoy" in deployments
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{overlay}: {name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") == "RuntimeDefault", where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container.get("resources", {}).get(bound, {}).keys(), f"{where}: {bound}"
            image = container["image"]
            assert re.search(r":[\w][\w.-]*$|@sha256:[0-9a-f]{64}$", image) and not image.endswith(":latest"), (
                f"{where}: image {image!r} needs a tag or digest (set by the overlay)"
            )
        for container in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{overlay}: {name}/{container['name']} has no {probe}"


def test_network_policies_deny_by_default_and_allow_only_the_edges_that_exist(rendered):
    _, objects = rendered
    policies = list(_of_kind(objects, "NetworkPolicy").values())
    assert any(
        p["spec"].get("podSelector") in ({}, None)
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    ), "no default-deny ingress NetworkPolicy"

    edges = set()
    for policy in policies:
        target = policy["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        if target not in BACKENDS:
            continue
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']} lets any pod reach {target}"
            assert [p.get("port") for p in rule.get("ports", [])] == ["grpc"], policy["metadata"]["name"]
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: only pods of the namespace"
                edges.add((peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], target))
    assert edges == EDGES


def test_envoy_config_routes_to_every_backend_by_its_dns_name(rendered):
    _, objects = rendered
    configmaps = [c for name, c in _of_kind(objects, "ConfigMap").items() if name.startswith("envoy-config")]
    assert len(configmaps) == 1
    ((key, text),) = configmaps[0]["data"].items()
    config = json.loads(text)

    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, port in BACKENDS.items():
        dns_name = f"{name}.{NAMESPACE}.svc.cluster.local"
        assert dns_name in text
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS", name
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": dns_name, "port_value": port}

    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": topology.EDGE_PORT}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert DESCRIPTOR_IN_IMAGE in text
    assert DESCRIPTOR_IN_IMAGE in (REPO_ROOT / "gateway-envoy" / "Dockerfile").read_text()

    # The Deployment mounts that ConfigMap where its -c argument looks, and listens where Envoy does.
    spec = _of_kind(objects, "Deployment")["envoy"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    config_path = container["args"][container["args"].index("-c") + 1]
    configmap_name = configmaps[0]["metadata"]["name"]
    volume = next(v["name"] for v in spec["volumes"] if v.get("configMap", {}).get("name") == configmap_name)
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)
    assert config_path == f"{mount}/{key}"
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [topology.EDGE_PORT]
    service = _of_kind(objects, "Service")["envoy"]["spec"]
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("http", topology.EDGE_PORT)]


def test_secrets_are_placeholders_and_each_pod_gets_only_its_own(rendered):
    overlay, objects = rendered
    secrets = _of_kind(objects, "Secret")
    if overlay == "prod":
        assert SECRET_NAME not in secrets, "prod must not ship the placeholder Secret"
    else:
        values = {k: base64.b64decode(v).decode() for k, v in secrets[SECRET_NAME]["data"].items()}
        assert values.keys() == {
            "VB_IDENTITY_SECRET",
            "VB_OPERATOR_API_KEY",
            "VB_EDGE_SECRET",
            "VB_DATABASE_URL",
            "VB_REDIS_URL",
        }
        for key in ("VB_IDENTITY_SECRET", "VB_OPERATOR_API_KEY", "VB_EDGE_SECRET"):
            assert "FAKE" in values[key], key

    configmaps = _of_kind(objects, "ConfigMap")
    for name, deployment in _of_kind(objects, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            env = {e["name"]: e for e in container.get("env", [])}
            assert ("VB_OPERATOR_API_KEY" in env) == (name == "auth"), f"{name}/{container['name']}"
            # The edge secret: Envoy sends it to auth.Check, and no one else may hold it.
            assert ("VB_EDGE_SECRET" in env) == (name in ("auth", "envoy")), f"{name}/{container['name']}"
            refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
            for ref in refs:
                # In prod the Secret is created outside git, under this fixed name.
                assert ref["name"] in secrets or (overlay == "prod" and ref["name"] == SECRET_NAME), ref
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{name}: secrets by key, so each pod gets only its own"
                assert source["configMapRef"]["name"] in configmaps, source


def test_committed_envoy_config_is_current_and_envoy_accepts_it():
    assert (REPO_ROOT / "gen" / "vocalbridge.pb").is_file(), "run `make gen` first"
    assert (REPO_ROOT / ".venv" / "bin" / "envoy").is_file(), "run `make venv` first"
    result = subprocess.run(
        [str(K8S / "render-envoy.sh"), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_image_is_the_shared_base_plus_its_own_code():
    """services/<svc>/Dockerfile: FROM the base image (services/base.Dockerfile), its own source,
    its own module as entrypoint, a numeric non-root user."""
    assert "USER 10001:10001" in (REPO_ROOT / "services" / "base.Dockerfile").read_text()
    runnable = {p.parent.parent.parent.name for p in REPO_ROOT.glob("services/*/src/vocalbridge_*/__main__.py")}
    with_dockerfile = {p.parent.name for p in REPO_ROOT.glob("services/*/Dockerfile")}
    assert runnable <= with_dockerfile, f"services without a Dockerfile: {runnable - with_dockerfile}"
    for service in with_dockerfile:
        text = (REPO_ROOT / "services" / service / "Dockerfile").read_text()
        assert "FROM ${BASE_IMAGE}" in text and "ARG BASE_IMAGE=vocalbridge/service-base" in text, service
        assert f"COPY services/{service}/src /app/service" in text, service
        assert f'ENTRYPOINT ["python", "-m", "vocalbridge_{service}"]' in text, service
        assert text.rstrip().splitlines()[-3].startswith("USER 10001"), service


def test_the_console_is_deployed_behind_envoy_only(rendered):
    """The console image (web/Dockerfile) on the topology's port, reached only from Envoy, which
    routes the console's paths to it without authentication."""
    overlay, objects = rendered
    port = topology.CONSOLE_PORT
    deployment = _of_kind(objects, "Deployment")["console"]
    template = deployment["spec"]["template"]
    assert _label(template, "app.kubernetes.io/component") == "frontend"
    (container,) = template["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", port)]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, (overlay, probe)
    service = _of_kind(objects, "Service")["console"]["spec"]
    assert service.get("clusterIP") == "None"
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("http", port)]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    assert "console" in _of_kind(objects, "PodDisruptionBudget")
    assert template["spec"]["serviceAccountName"] == "console"

    (policy,) = [
        p
        for p in _of_kind(objects, "NetworkPolicy").values()
        if p["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "console"
    ]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]
    assert [p["port"] for p in rule["ports"]] == ["http"]

    config = json.loads(
        next(
            iter(
                _of_kind(objects, "ConfigMap")[n]
                for n in _of_kind(objects, "ConfigMap")
                if n.startswith("envoy-config")
            )
        )["data"]["envoy.json"]
    )
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    (endpoint,) = clusters["console"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": f"console.{NAMESPACE}.svc.cluster.local",
        "port_value": port,
    }
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in manager["route_config"]["virtual_hosts"][0]["routes"]}
    console_routes = {name: r for name, r in routes.items() if r.get("route", {}).get("cluster") == "console"}
    assert {str(r["match"]) for r in console_routes.values()} == {
        str({"path": "/"}),
        str({"prefix": "/assets/"}),
        str({"path": "/v1/openapi.json"}),
    }
    for route in console_routes.values():
        assert route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    # Every other route keeps authentication on.
    for name, route in routes.items():
        if name not in console_routes and name != "healthz":
            assert "disabled" not in route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {})


def test_the_console_image_serves_the_built_app_as_a_non_root_user():
    text = (REPO_ROOT / "web" / "Dockerfile").read_text()
    assert "COPY libs/devstack/src/vocalbridge_devstack/static.py /app/static.py" in text
    assert f"EXPOSE {topology.CONSOLE_PORT}" in text and f'"--port", "{topology.CONSOLE_PORT}"' in text
    assert "npm ci" in text and "tools/gen_openapi.py" in text
    assert text.rstrip().splitlines()[-3].startswith("USER 10001")
    allowed = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for path in ("!web/src/", "!web/package-lock.json", "!tools/gen_openapi.py"):
        assert path in allowed, f".dockerignore keeps {path} from the build context"


def test_prod_autoscales_the_edge_conversation_and_voice_and_nothing_else(rendered):
    overlay, objects = rendered
    autoscalers = _of_kind(objects, "HorizontalPodAutoscaler")
    deployments = _of_kind(objects, "Deployment")
    if overlay != "prod":
        assert not autoscalers, "dev runs one replica of each"
        assert all(d["spec"].get("replicas") == 1 for d in deployments.values())
        return
    assert autoscalers.keys() == {"envoy", "conversation", "voice"}
    for name, hpa in autoscalers.items():
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
        assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
        # The autoscaler owns the count: an apply must not reset it.
        assert "replicas" not in deployments[name]["spec"], name
    for name in deployments.keys() - autoscalers.keys():
        assert deployments[name]["spec"]["replicas"] >= 2, name


def test_envoy_drains_before_it_stops_within_the_grace_period(rendered):
    """Envoy exits at once on SIGTERM: the preStop hook asks its admin port to drain and waits the
    drain time; the grace period covers the hook. (tests/e2e/test_manifest_smoke.py runs the hook
    against a real Envoy.)"""
    _, objects = rendered
    spec = _of_kind(objects, "Deployment")["envoy"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    drain_time = int(args[args.index("--drain-time-s") + 1])
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    script = hook[-1]
    assert f"/dev/tcp/127.0.0.1/{topology.EDGE_ADMIN_PORT}" in script and "POST /drain_listeners?graceful" in script
    slept = int(re.search(r"sleep (\d+)\s*$", script).group(1))
    assert slept >= drain_time
    assert spec["terminationGracePeriodSeconds"] > slept


def test_every_pod_that_serves_metrics_says_where(rendered):
    _, objects = rendered
    for name, deployment in _of_kind(objects, "Deployment").items():
        template = deployment["spec"]["template"]
        if _label(template, "app.kubernetes.io/component") not in ("backend", "edge"):
            continue
        annotations = template["metadata"].get("annotations", {})
        (main,) = [c for c in template["spec"]["containers"] if c["name"] == name]
        metrics = [p["containerPort"] for p in main["ports"] if p["name"] == "metrics"]
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert [int(annotations["prometheus.io/port"])] == metrics, name
        assert annotations["prometheus.io/path"] == ("/stats/prometheus" if name == "envoy" else "/metrics")


REDIS_CLIENTS = {"auth", "conversation", "voice"}


def test_the_services_that_enforce_limits_get_the_redis_url_from_the_secret(rendered):
    overlay, objects = rendered
    for name, deployment in _backend_deployments(objects).items():
        (main,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
        env = {e["name"]: e for e in main.get("env", [])}
        if name in REDIS_CLIENTS:
            assert env["VB_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": "VB_REDIS_URL"}
        else:
            assert "VB_REDIS_URL" not in env, name
    if overlay == "dev":
        url = base64.b64decode(_of_kind(objects, "Secret")[SECRET_NAME]["data"]["VB_REDIS_URL"]).decode()
        assert url == f"redis://redis.{NAMESPACE}.svc.cluster.local:6379/0"
        assert {"redis", "postgres"} <= _of_kind(objects, "Service").keys()
    else:
        assert "redis" not in _of_kind(objects, "Deployment"), "prod uses an external Redis"


def _egress(objects) -> dict[str, list[dict]]:
    """The egress rules that apply to each Deployment's pods (by their app.kubernetes.io/name)."""
    labels = {
        _label(d["spec"]["template"]): d["spec"]["template"]["metadata"]["labels"]
        for d in _of_kind(objects, "Deployment").values()
    }

    def selects(selector: dict, pod: dict) -> bool:
        if not selector.get("matchLabels", {}).items() <= pod.items():
            return False
        return all(pod.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))

    rules: dict[str, list[dict]] = {name: [] for name in labels}
    for policy in _of_kind(objects, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Egress" in spec.get("policyTypes", []):
            for name, pod in labels.items():
                if selects(spec.get("podSelector", {}), pod):
                    rules[name] += spec.get("egress", [])
    return rules


def _egress_ports(rules: list[dict]) -> set:
    return {port.get("port") for rule in rules for port in rule.get("ports", [])}


def test_egress_is_denied_by_default_and_opened_only_where_a_call_goes(rendered):
    _, objects = rendered
    policies = _of_kind(objects, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = _egress(objects)
    database = {"auth", "agents", "conversation", "billing", "voice"}
    for name, rules in egress.items():
        ports = _egress_ports(rules)
        assert 53 in ports, f"{name} cannot resolve names"
        assert (5432 in ports) == (name in database), name
        assert (6379 in ports) == (name in REDIS_CLIENTS), name
        assert (443 in ports) == (name == "conversation"), f"{name}: only conversation calls LLM providers"
    # Pod-to-pod egress: exactly the edges above (and Envoy to the console).
    calls = set()
    for name, rules in egress.items():
        for rule in rules:
            for peer in rule.get("to", []):
                target = peer.get("podSelector", {}).get("matchLabels", {})
                if "namespaceSelector" in peer:
                    continue
                if target.get("app.kubernetes.io/component") == "backend":
                    calls |= {(name, backend) for backend in BACKENDS}
                elif "app.kubernetes.io/name" in target:
                    calls.add((name, target["app.kubernetes.io/name"]))
    assert calls == EDGES | {("envoy", "console")}
