"""The manifests describe a working system: the rendered `dev` overlay, run as local processes.

Every Deployment of `kubectl kustomize deploy/k8s/overlays/dev` becomes a "pod": its init
containers run to completion, then its container starts with exactly the command (the image's
ENTRYPOINT and CMD, from its Dockerfile, unless the manifest overrides them), the arguments, the
environment (literal values, the ConfigMap by envFrom, Secret and ConfigMap keys) and the mounted
ConfigMaps that the manifest gives it, and is ready when its own readiness probe passes (gRPC
health or HTTP GET, on the port the probe names). Then a JSON turn and a voice turn go through
the Envoy that the envoy-config ConfigMap configures.

What a cluster would provide is emulated, and nothing else is changed:
- each pod gets an address of its own on the loopback network (127.0.10.N), where its `0.0.0.0`
  and its own `127.0.0.1` bind; ports stay exactly as the manifests say;
- a Service's DNS name (`<name>.vocalbridge.svc.cluster.local`) resolves to the address of the pod
  its selector picks; PostgreSQL's and Redis's names to this machine's servers, and PostgreSQL's
  database to a fresh test database;
- paths inside the images (the ones their Dockerfiles COPY) are the repository's files they were
  copied from.

So a wrong command, port, variable or route in a manifest fails this test, as it would fail in a
cluster; `test_a_broken_manifest_fails_the_smoke_run` shows it for one of each.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import temporary_database

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAY = REPO_ROOT / "deploy" / "k8s" / "overlays" / "dev"
NAMESPACE = "vocalbridge"
CLUSTER_SUFFIX = f".{NAMESPACE}.svc.cluster.local"
# Where each image's Dockerfile is (its final stage holds the ENTRYPOINT, CMD and ENV).
DOCKERFILES = {
    **{
        f"vocalbridge/{s}": ["services/base.Dockerfile", f"services/{s}/Dockerfile"]
        for s in ("auth", "agents", "conversation", "billing", "voice")
    },
    "vocalbridge/envoy": ["gateway-envoy/Dockerfile"],
    "vocalbridge/console": ["web/Dockerfile"],
}
# Files inside the images, and the repository's files or build outputs they are.
IMAGE_PATHS = {
    "/app/static.py": REPO_ROOT / "libs" / "devstack" / "src" / "vocalbridge_devstack" / "static.py",
    "/srv/console": REPO_ROOT / "web" / "dist",
    "/srv/openapi.json": REPO_ROOT / "gen" / "openapi.json",
    "/etc/vocalbridge/vocalbridge.pb": REPO_ROOT / "gen" / "vocalbridge.pb",
}
# The in-cluster databases of the dev overlay are this machine's servers.
EXTERNAL = {"postgres": "127.0.0.1", "redis": "127.0.0.1"}
READY_TIMEOUT_S = 90.0


class SmokeFailure(AssertionError):
    """The manifests did not make a working system; says where."""


# --------------------------------------------------------------------------------------------
# Reading the rendered overlay


def render_dev() -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to render deploy/k8s"
    result = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def image_name(image: str) -> str:
    return re.sub(r"(@sha256:[0-9a-f]+|:[\w.-]+)$", "", image)


def _final_stage(path: Path) -> list[str]:
    """The instructions of a Dockerfile's last stage, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


@dataclass
class Image:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    copies: set[str]  # destinations of the final stage's COPY instructions


def image_of(image: str) -> Image:
    """ENTRYPOINT, CMD, ENV and COPY destinations of an image, from its Dockerfiles (a service
    image's own on top of the shared base's)."""
    found = Image([], [], {}, set())
    for dockerfile in DOCKERFILES[image_name(image)]:
        for line in _final_stage(REPO_ROOT / dockerfile):
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "ENTRYPOINT":
                found.entrypoint, found.cmd = json.loads(rest), []
            elif word == "CMD":
                found.cmd = json.loads(rest)
            elif word == "ENV":
                found.env.update(part.split("=", 1) for part in shlex.split(rest))
            elif word == "COPY":
                found.copies.add(shlex.split(rest)[-1])
    return found


# --------------------------------------------------------------------------------------------
# Pods as local processes


@dataclass
class Pod:
    name: str
    address: str  # this pod's own address on the loopback network
    deployment: dict
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]


class Cluster:
    """The rendered objects, run as processes (see the module docstring for what is emulated)."""

    def __init__(self, objects: list[dict], database_url: str, work: Path) -> None:
        self.objects = objects
        self.work = work
        self.configmaps = {n: c.get("data", {}) for n, c in of_kind(objects, "ConfigMap").items()}
        self.secrets = {
            n: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            for n, s in of_kind(objects, "Secret").items()
        }
        self.deployments = of_kind(objects, "Deployment")
        self.pods: dict[str, Pod] = {}
        number = 0
        for name, deployment in self.deployments.items():
            if name in EXTERNAL:
                continue
            number += 1
            self.pods[name] = Pod(name, f"127.0.10.{number}", deployment, work / "logs")
        # DNS: a Service's name → the address of the pod its selector picks (headless or not).
        self.dns: dict[str, str] = {}
        for name, service in of_kind(objects, "Service").items():
            selector = service["spec"].get("selector", {})
            picked = [
                pod.address
                for pod in self.pods.values()
                if selector.items() <= pod.deployment["spec"]["template"]["metadata"]["labels"].items()
            ]
            if name in EXTERNAL:
                self.dns[name + CLUSTER_SUFFIX] = EXTERNAL[name]
            elif picked:
                self.dns[name + CLUSTER_SUFFIX] = picked[0]
        self.database_url = database_url

    # -- what a pod sees -------------------------------------------------------------------

    def localize(self, text: str, pod: Pod) -> str:
        """A value as the pod would see it, on this machine: its own addresses, Service names,
        the test database, image paths."""
        text = text.replace("0.0.0.0", pod.address).replace("127.0.0.1", pod.address)
        for name, address in self.dns.items():
            text = text.replace(name, address)
        if text.startswith("postgresql://"):
            parts, test = urlsplit(text), urlsplit(self.database_url)
            if parts.hostname == EXTERNAL["postgres"]:
                text = urlunsplit(parts._replace(netloc=test.netloc, path=test.path))
        for inside, outside in IMAGE_PATHS.items():
            text = text.replace(inside, str(outside))
        return text

    def environment(self, container: dict, pod: Pod, image: Image) -> dict[str, str]:
        env = {k: v for k, v in image.env.items() if k not in ("PATH", "PYTHONPATH")}
        for source in container.get("envFrom", []):
            ref = source["configMapRef"]["name"]
            if ref not in self.configmaps:
                raise SmokeFailure(f"{pod.name}/{container['name']}: envFrom a missing ConfigMap {ref}")
            env.update(self.configmaps[ref])
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"].get("secretKeyRef") or entry["valueFrom"]["configMapKeyRef"]
            store = self.secrets if "secretKeyRef" in entry["valueFrom"] else self.configmaps
            if ref["key"] not in store.get(ref["name"], {}):
                raise SmokeFailure(f"{pod.name}/{container['name']}: {entry['name']} names a missing key {ref}")
            env[entry["name"]] = store[ref["name"]][ref["key"]]
        env = {k: self.localize(v, pod) for k, v in env.items()}
        # The image's PATH and PYTHONPATH name its own directories; here the code is where the
        # test's own interpreter finds it.
        local = {name: os.environ[name] for name in ("PATH", "PYTHONPATH") if name in os.environ}
        return {**env, **local, "HOME": str(self.work)}

    def mounts(self, container: dict, pod: Pod) -> dict[str, Path]:
        """ConfigMap volumes, written out (localized) where the container's mounts point."""
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mounted = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" not in volume:
                continue  # emptyDir: this machine's /tmp serves
            directory = self.work / "volumes" / pod.name / mount["name"]
            directory.mkdir(parents=True, exist_ok=True)
            for key, value in self.configmaps[volume["configMap"]["name"]].items():
                (directory / key).write_text(self.localize(value, pod))
            mounted[mount["mountPath"]] = directory
        return mounted

    def argv(self, container: dict, pod: Pod) -> tuple[list[str], dict[str, str]]:
        image = image_of(container["image"])
        for inside in IMAGE_PATHS:
            if any(inside in part for part in image.entrypoint + image.cmd + container.get("args", [])):
                assert inside in image.copies, f"{container['image']}: {inside} is not in the image"
        command = container.get("command", image.entrypoint)
        args = container.get("args", image.cmd if "command" not in container else [])
        argv = [self.localize(part, pod) for part in command + args]
        for inside, outside in self.mounts(container, pod).items():
            argv = [part.replace(inside, str(outside)) for part in argv]
        executable = {"python": sys.executable, "envoy": str(Path(sys.executable).parent / "envoy")}
        argv[0] = executable.get(argv[0], argv[0])
        return argv, self.environment(container, pod, image)

    # -- running ---------------------------------------------------------------------------

    def start(self, pod: Pod) -> None:
        pod.log_dir.mkdir(parents=True, exist_ok=True)
        for init in pod.spec.get("initContainers", []):
            argv, env = self.argv(init, pod)
            done = subprocess.run(argv, env=env, cwd=self.work, capture_output=True, timeout=300)
            if done.returncode != 0:
                raise SmokeFailure(
                    f"{pod.name}: init container {init['name']} ({' '.join(argv[1:])}) exited with "
                    f"{done.returncode}:\n{done.stdout.decode()[-2000:]}{done.stderr.decode()[-2000:]}"
                )
        for container in pod.spec["containers"]:
            argv, env = self.argv(container, pod)
            log = open(pod.log_dir / f"{pod.name}.log", "ab")  # noqa: SIM115 - the process owns it
            setpriv = shutil.which("setpriv")
            prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
            pod.processes.append(
                subprocess.Popen(prefix + argv, env=env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()

    def wait_ready(self, pod: Pod, timeout: float = READY_TIMEOUT_S) -> None:
        """Every container's readinessProbe, as the kubelet would run it, until it passes."""
        deadline = time.monotonic() + timeout
        for container in pod.spec["containers"]:
            probe = container["readinessProbe"]
            while not self._probe(pod, container, probe):
                for process in pod.processes:
                    if process.poll() is not None:
                        raise SmokeFailure(f"{pod.name} exited with {process.returncode}:\n{self.log_tail(pod)}")
                if time.monotonic() > deadline:
                    raise SmokeFailure(f"{pod.name} never passed its readiness probe {probe}:\n{self.log_tail(pod)}")
                time.sleep(0.2)

    def _probe(self, pod: Pod, container: dict, probe: dict) -> bool:
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "grpc" in probe:
            with grpc.insecure_channel(f"{pod.address}:{probe['grpc']['port']}") as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return False
            return answer.status == health_pb2.HealthCheckResponse.SERVING
        if "httpGet" in probe:
            port = probe["httpGet"]["port"]
            port = ports.get(port, port)
            try:
                response = httpx.get(f"http://{pod.address}:{port}{probe['httpGet']['path']}", timeout=1)
            except httpx.HTTPError:
                return False
            return response.status_code < 400
        if "exec" in probe:
            return True  # the databases' own probes: this machine's servers are up
        raise AssertionError(f"{pod.name}: a probe this test does not know: {probe}")

    def log_tail(self, pod: Pod) -> str:
        path = pod.log_dir / f"{pod.name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no output)"

    def stop(self) -> None:
        for pod in self.pods.values():
            for process in pod.processes:
                if process.poll() is None:
                    process.terminate()
        for pod in self.pods.values():
            for process in pod.processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    @contextlib.contextmanager
    def running(self, only: set[str] | None = None) -> Iterator[Cluster]:
        """Starts the pods (backends, then the console, then Envoy) and waits until each is ready."""
        order = sorted(
            (p for p in self.pods.values() if only is None or p.name in only),
            key=lambda p: ("backend", "frontend", "edge").index(
                p.deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            ),
        )
        try:
            for pod in order:
                self.start(pod)
                self.wait_ready(pod)
            yield self
        finally:
            self.stop()

    @property
    def edge(self) -> str:
        """The envoy Service's port, on the pod it selects."""
        port = of_kind(self.objects, "Service")["envoy"]["spec"]["ports"][0]["port"]
        return f"http://{self.dns['envoy' + CLUSTER_SUFFIX]}:{port}"

    @property
    def operator_key(self) -> str:
        return self.secrets["vocalbridge-secrets"]["VB_OPERATOR_API_KEY"]


# --------------------------------------------------------------------------------------------
# What goes through the edge: one function per kind of call, run in order. Each gets the client
# (logged in as a fresh tenant) and the session, and raises SmokeFailure when the call fails.


def expect(response: httpx.Response, what: str) -> dict:
    if response.status_code != 200:
        raise SmokeFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


def json_turn(http: httpx.Client, session: str) -> None:
    body = expect(
        http.post(
            f"/v1/{session}/messages",
            json={"content": "Hello from a manifest"},
            headers={"Idempotency-Key": "smoke-json"},
        ),
        "a JSON turn",
    )
    assert body["assistantMessage"]["content"] and body["delivery"]["provider"] == "vendorA", body


def voice_turn(http: httpx.Client, session: str) -> None:
    said = expect(
        http.post(
            "/v1/voice:synthesize",
            json={"text": "Please book a table for two tonight.", "voice": "piper/en_US-joe-medium"},
        ),
        "synthesis",
    )
    body = expect(
        http.post(
            f"/v1/{session}/voice:converse",
            json={"audio": {"content": said["audio"]["content"]}},
            headers={"Idempotency-Key": "smoke-voice"},
        ),
        "a voice turn",
    )
    # Piper's voice varies from one synthesis to the next; the recognizer may hear "two" as a homophone.
    words = set(body["transcript"].lower().split())
    assert "table" in words and words & {"two", "to", "too", "2"}, body["transcript"]
    assert body["replyText"] and base64.b64decode(body["replyAudio"]["content"])


def chat_completion(http: httpx.Client, session: str) -> None:
    """The OpenAI-compatible route (raw body, its own route timeout and error filter), stateless."""
    agent = expect(http.get(f"/v1/{session}"), "reading the session")["agent"]
    body = expect(
        http.post(
            "/v1/chat/completions",
            json={"model": agent, "messages": [{"role": "user", "content": "Hello from an OpenAI client"}]},
        ),
        "a chat completion",
    )
    assert body["object"] == "chat.completion" and body["model"] == agent, body
    assert body["choices"][0]["message"]["content"] and body["vocalbridge"]["provider"] == "vendorA", body


Call = Callable[[httpx.Client, str], None]


def through_the_edge(cluster: Cluster, calls: tuple[Call, ...]) -> None:
    with httpx.Client(base_url=cluster.edge, timeout=60) as http:
        tenant = expect(
            http.post(
                "/v1/tenants",
                json={"displayName": "Smoke"},
                headers={"Authorization": f"Bearer {cluster.operator_key}"},
            ),
            "creating a tenant with the operator key from the Secret",
        )
        http.headers["Authorization"] = f"Bearer {tenant['apiKey']['secret']}"
        agent = expect(
            http.post(
                "/v1/agents",
                json={
                    "displayName": "Smoke",
                    "systemPrompt": "Be brief.",
                    "primaryProvider": "vendorA",
                    "voice": {"voice": "espeak/en-us", "wordsPerMinute": 300},
                },
            ),
            "creating an agent",
        )
        session = expect(http.post("/v1/sessions", json={"agent": agent["name"]}), "opening a session")["name"]
        for call in calls:
            call(http, session)


def smoke(objects: list[dict], work: Path, calls: tuple[Call, ...], only: set[str] | None = None) -> Cluster:
    with temporary_database() as database_url:
        cluster = Cluster(objects, database_url, work)
        with cluster.running(only):
            through_the_edge(cluster, calls)
            return cluster


# --------------------------------------------------------------------------------------------


def test_the_dev_overlay_runs_a_json_turn_a_chat_completion_and_a_voice_turn_through_its_envoy(tmp_path):
    objects = render_dev()
    with temporary_database() as database_url:
        cluster = Cluster(objects, database_url, tmp_path)
        assert set(cluster.pods) == {"auth", "agents", "conversation", "billing", "voice", "console", "envoy"}
        with cluster.running():
            through_the_edge(cluster, (json_turn, chat_completion, voice_turn))
            # The console's files through the same edge, without a key.
            assert httpx.get(cluster.edge + "/", timeout=10).status_code == 200
            envoy_drains_on_its_pre_stop_hook(cluster)


def envoy_drains_on_its_pre_stop_hook(cluster: Cluster) -> None:
    """The preStop hook, run as the kubelet would (inside the pod: its loopback is the pod's
    address here), puts Envoy into its drain: responses close their connections from then on.
    The hook's sleep (the drain time) is cut short once that is seen."""
    pod = cluster.pods["envoy"]
    (container,) = pod.spec["containers"]
    hook = [cluster.localize(part, pod) for part in container["lifecycle"]["preStop"]["exec"]["command"]]
    assert httpx.get(cluster.edge + "/healthz", timeout=5).headers.get("connection") != "close"
    running = subprocess.Popen(hook, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if httpx.get(cluster.edge + "/healthz", timeout=5).headers.get("connection") == "close":
                break
            time.sleep(0.1)
        response = httpx.get(cluster.edge + "/healthz", timeout=5)
        assert response.status_code == 200 and response.headers.get("connection") == "close", (
            "the preStop hook did not drain Envoy"
        )
    finally:
        running.kill()
        running.wait()


def _broken(objects: list[dict], kind: str, name: str, change: Callable[[dict], None]) -> list[dict]:
    broken = copy.deepcopy(objects)
    (target,) = [o for o in broken if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    change(target)
    return broken


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _wrong_command(deployment: dict) -> None:
    _container(deployment)["args"] = ["server"]


def _wrong_port(configmap: dict) -> None:
    configmap["data"]["VB_AGENTS_ADDRESS"] = configmap["data"]["VB_AGENTS_ADDRESS"].replace(":50052", ":50059")


def _missing_variable(deployment: dict) -> None:
    container = _container(deployment)
    container["env"] = [e for e in container["env"] if e["name"] != "VB_IDENTITY_SECRET"]


def _wrong_route(configmap: dict) -> None:
    configmap["data"]["envoy.json"] = configmap["data"]["envoy.json"].replace(
        '"prefix": "/vocalbridge.conversation.v1."', '"prefix": "/vocalbridge.conversations.v1."'
    )


@pytest.mark.parametrize(
    ("kind", "name", "change", "symptom"),
    [
        ("Deployment", "conversation", _wrong_command, r"conversation exited with 2"),
        ("ConfigMap", "vocalbridge-config", _wrong_port, r"opening a session: HTTP 503"),
        ("Deployment", "billing", _missing_variable, r"billing exited with 2.*VB_IDENTITY_SECRET"),
        ("ConfigMap", "envoy-config", _wrong_route, r"opening a session: HTTP 404"),
    ],
    ids=["wrong command", "wrong port", "missing variable", "wrong envoy route"],
)
def test_a_broken_manifest_fails_the_smoke_run(tmp_path, kind, name, change, symptom):
    """The positive control: each mistake, planted in a copy of the rendered overlay, fails the
    run with its own symptom (voice and the console are left out: none of these involves them)."""
    objects = _broken(render_dev(), kind, name, change)
    text_only = {"auth", "agents", "conversation", "billing", "envoy"}
    with pytest.raises(SmokeFailure, match=re.compile(symptom, re.S)):
        smoke(objects, tmp_path / uuid.uuid4().hex[:8], (json_turn,), only=text_only)
