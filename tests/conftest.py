"""Fixtures shared by every test layer: a real PostgreSQL database per test
module, the identity secret, and helpers to act as a tenant."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner

# The admin connection used to create and drop throw-away databases.
PG_ADMIN_URL = os.environ.get("VB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_IDENTITY_SECRET = b"test-identity-secret-0123456789abcdef"


def _database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def temporary_database():
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"vb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_url():
    """A fresh PostgreSQL database for one test module."""
    with temporary_database() as url:
        yield url


@pytest.fixture(scope="session")
def signer() -> IdentitySigner:
    return IdentitySigner(TEST_IDENTITY_SECRET)


@pytest.fixture(scope="session")
def as_tenant(signer):
    """`as_tenant(tenant_id, scopes)` → gRPC metadata carrying a signed identity."""

    def metadata(tenant_id: str, scopes=("admin",), key_id: str = "key_test") -> tuple[tuple[str, str], ...]:
        return ((IDENTITY_HEADER, signer.mint(tenant_id, key_id, scopes)),)

    return metadata


# Redis for the rate-limit and budget counters: the machine's server, each test under a key
# prefix of its own (VB_TEST_REDIS_URL to use another server).
REDIS_URL = os.environ.get("VB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def forget_redis_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Deletes the keys under `prefix` (budget windows would otherwise stay until a month ends)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@contextlib.asynccontextmanager
async def running_stack(config: Any) -> AsyncIterator[Any]:
    """The stack of `config` (a StackConfig), started; when the block ends, stopped (every child
    gone, its logs flushed) and its Redis keys (VB_REDIS_KEY_PREFIX) deleted."""
    from vocalbridge_devstack.stack import Stack

    stack = Stack(config)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
        prefix = config.extra_env.get("VB_REDIS_KEY_PREFIX")
        if prefix:
            forget_redis_prefix(prefix)


@pytest.fixture
def redis_prefix():
    """A key prefix no other test (or engineer's run) shares; its keys are deleted afterwards."""
    prefix = f"vbtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    forget_redis_prefix(prefix)


@contextmanager
def throwaway_redis():
    """A Redis server of its own on a free port (to stop and start in a test): yields
    (url, stop, start)."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the throw-away redis-server did not start")

    def stop() -> None:
        while process:
            running = process.pop()
            running.terminate()
            running.wait(10)

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", stop, start
    finally:
        stop()
