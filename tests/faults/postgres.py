"""A PostgreSQL server of the fault suite's own, to restart under load.

The machine's shared server (127.0.0.1:5432) serves every other test and engineer, so it is
never restarted: the suite runs `initdb` into a temporary directory and starts its own
cluster on a free port with the Debian binaries (/usr/lib/postgresql/<version>/bin).
PostgreSQL refuses to run as root: when we are root, its commands run as the `postgres`
user (util-linux's setpriv), which owns the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from vocalbridge_devstack.stack import free_port

DATABASE = "vocalbridge"


def _binaries() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: int(path.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    return found[-1].parent


class PrivatePostgres:
    """initdb + pg_ctl on a free port in a temporary directory; `restart` as a crash would."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="vb-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root needs util-linux's setpriv to run PostgreSQL as postgres")
            self._as_user = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, str(self.bin / tool), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create(self) -> None:
        # No fsync: a test cluster, and PostgreSQL's own crash recovery (restart below) does not
        # depend on it (the processes die, the kernel keeps what they wrote).
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Every backend killed at once (`immediate`: no checkpoint, crash recovery on start),
        down for `down_seconds`, then started again."""
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
