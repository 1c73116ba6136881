"""The fault suite's stack: every service but voice as real processes behind a real Envoy, on a
PostgreSQL server of its own (tests/faults/postgres.py) so that the suite can restart it."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import REDIS_URL, running_stack
from tests.faults.load import SUMMARY_LINES
from tests.faults.postgres import PrivatePostgres
from vocalbridge_devstack.stack import StackConfig

# Simulated providers: vendorA and vendorB always answer; shaky and shaky2 fail 30% of the
# calls; down fails every call; sluggish answers after 2 s, past the 0.4 s an attempt may take.
PROVIDER_ENV = {
    "VB_SIMULATED_PROVIDERS": "vendorA,vendorB,shaky,shaky2,down,sluggish",
    "VB_PROVIDER_SEED": "42",
    "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORA_LATENCY_MS": "10",
    "VB_PROVIDER_VENDORB_LATENCY_MS": "10",
    "VB_PROVIDER_SHAKY_FAILURE_RATE": "0.3",
    "VB_PROVIDER_SHAKY_LATENCY_MS": "10",
    "VB_PROVIDER_SHAKY2_FAILURE_RATE": "0.3",
    "VB_PROVIDER_SHAKY2_LATENCY_MS": "10",
    "VB_PROVIDER_DOWN_FAILURE_RATE": "1",
    "VB_PROVIDER_DOWN_LATENCY_MS": "0",
    "VB_PROVIDER_SLUGGISH_FAILURE_RATE": "0",
    "VB_PROVIDER_SLUGGISH_LATENCY_MS": "2000",
    "VB_DELIVERY_ATTEMPT_TIMEOUT_MS": "400",
    "VB_DELIVERY_BACKOFF_BASE_MS": "5",
    "VB_DELIVERY_BACKOFF_CAP_MS": "200",
    "VB_BREAKER_RESET_TIMEOUT_MS": "1000",
}


def pytest_terminal_summary(terminalreporter):
    if SUMMARY_LINES:
        terminalreporter.section("fault suite")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def private_postgres():
    server = PrivatePostgres()
    try:
        server.create()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
async def fault_stack(private_postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    prefix = f"vbtest:{uuid.uuid4().hex[:12]}:"
    config = StackConfig.with_free_ports(
        data_dir=root / "var",
        database_url=private_postgres.url,
        log_dir=root / "logs",
        services=("auth", "agents", "billing", "conversation"),
        workers={},
        extra_env={
            **PROVIDER_ENV,
            # A claim left by a killed worker is taken over by the client's retry this soon.
            "VB_IDEMPOTENCY_LEASE_SECONDS": "4",
            "VB_RELAY_POLL_INTERVAL_MS": "100",
            "VB_REDIS_URL": REDIS_URL,
            "VB_REDIS_KEY_PREFIX": prefix,
            "VB_LIMITS_STORE": "redis",
        },
    )
    async with running_stack(config) as stack:
        yield stack
