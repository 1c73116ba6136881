"""What the scenarios share: CPU accounting from /proc, the wrk driver, machine facts."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("VB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_MARKER = "BENCH_JSON "


# --------------------------------------------------------------------------------------------
# CPU time of process trees, from /proc/<pid>/stat


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    start_ticks: int  # tells a reused pid from the process we saw before
    cpu_ticks: int  # utime + stime + cutime + cstime


def _read_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17, starttime 22.
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ProcStat(ppid=int(fields[1]), start_ticks=int(fields[19]), cpu_ticks=utime + stime + cutime + cstime)


def _all_stats() -> dict[int, ProcStat]:
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def tree_cpu_snapshot(roots: list[int]) -> dict[tuple[int, int], int]:
    """CPU ticks of every process in the trees rooted at `roots` (the roots, their children,
    children of children...), keyed by (pid, start time). cutime/cstime are included, so a
    descendant that exited and was reaped during the window is still counted in its parent."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    seen, todo = {}, [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if (pid, stats[pid].start_ticks) in seen:
            continue
        seen[(pid, stats[pid].start_ticks)] = stats[pid].cpu_ticks
        todo.extend(children.get(pid, ()))
    return seen


def cpu_seconds_between(before: dict, after: dict) -> float:
    """CPU seconds spent between two snapshots; a process that appeared in between counts
    from zero. (One that both started and vanished unreaped in between is not seen.)"""
    ticks = sum(value - before.get(key, 0) for key, value in after.items())
    return ticks / CLOCK_TICKS


# --------------------------------------------------------------------------------------------
# wrk


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (make bench does it when run as root)")


@dataclass
class WrkResult:
    connections: int
    threads: int
    duration_s: float
    requests: int
    ok: int  # 2xx
    non_2xx: int
    wrapped: bool  # the script ran out of sessions and reused some
    socket_errors: int  # connect/read/write errors and timeouts (no response at all)
    requests_per_s: float  # 2xx per second
    latency_ms: dict[str, float]  # p50, p90, p95, p99, max, mean
    loadgen_cpu_s: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


async def run_wrk(
    url: str,
    script: Path,
    script_args: list[str],
    *,
    connections: int,
    duration_s: float,
    threads: int = 2,
    timeout_s: float = 30.0,
) -> WrkResult:
    """Runs wrk once with a Lua script whose done() prints one `BENCH_JSON {...}` line.
    The arguments "%THREADS%" and "%CONNECTIONS%" in script_args are replaced by the thread
    count (at most one thread per connection) and the connection count."""
    threads = max(1, min(threads, connections))
    argv = [
        ensure_wrk(),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{int(timeout_s)}s",
        "-s",
        str(script),
        url,
        "--",
        *({"%THREADS%": str(threads), "%CONNECTIONS%": str(connections)}.get(arg, arg) for arg in script_args),
    ]
    before = os.times()
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    after = os.times()
    text = stdout.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {stderr.decode(errors='replace')}\n{text}")
    line = next((ln for ln in text.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no {WRK_MARKER.strip()} line:\n{text}\n{stderr.decode(errors='replace')}")
    data = json.loads(line[len(WRK_MARKER) :])
    duration = data["duration_us"] / 1e6
    socket_errors = sum(data["errors"][k] for k in ("connect", "read", "write", "timeout"))
    return WrkResult(
        connections=connections,
        threads=threads,
        duration_s=duration,
        requests=data["requests"],
        ok=data["ok"],
        non_2xx=data["non2xx"],
        wrapped=bool(data.get("wrapped", False)),
        socket_errors=socket_errors,
        requests_per_s=data["ok"] / duration if duration else 0.0,
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        loadgen_cpu_s=(after.children_user - before.children_user) + (after.children_system - before.children_system),
    )


# --------------------------------------------------------------------------------------------
# PostgreSQL


def database_url(name: str) -> str:
    """The URL of database `name` on the server of ADMIN_URL (which may name a socket directory)."""
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@contextmanager
def throwaway_database(prefix: str = "vb_bench"):
    """A fresh, empty PostgreSQL database (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name), name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postmaster_pid() -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine (the parent of the
    backend serving this connection); None for a remote server."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        backend = admin.execute("SELECT pg_backend_pid()").fetchone()[0]
        stat = _read_stat(backend)  # while the backend still exists
    return stat.ppid if stat is not None else None


def rss_bytes(roots: list[int]) -> int:
    """Resident memory of every process in the trees rooted at `roots` (VmRSS, bytes)."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    total, todo, seen = 0, [pid for pid in roots if pid in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo.extend(children.get(pid, ()))
    return total


# --------------------------------------------------------------------------------------------
# The machine, so that runs can be compared


def _command_output(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return (result.stdout or result.stderr).strip() or None


def envoy_path() -> str | None:
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


def machine_info() -> dict:
    info: dict = {
        "hostname": platform.node(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": None,
        "memory_gib": None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    envoy = envoy_path()
    version = _command_output([envoy, "--version"]) if envoy else None
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    info["envoy"] = version.split("version:", 1)[1].strip() if version and "version:" in version else version
    wrk = shutil.which("wrk")
    info["wrk"] = None
    if wrk:
        # wrk -v prints its version and usage, and exits non-zero.
        result = subprocess.run([wrk, "-v"], check=False, capture_output=True, text=True)
        lines = (result.stdout or result.stderr).splitlines()
        info["wrk"] = lines[0].strip() if lines else None
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            info["postgresql"] = admin.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        info["postgresql"] = None
    info["git_commit"] = _command_output(["git", "rev-parse", "HEAD"])
    status = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    info["git_dirty"] = bool(status) if info["git_commit"] else None
    return info
