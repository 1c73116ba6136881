"""The whole stack as real processes (every service and a real Envoy) on a
throw-away PostgreSQL database; tests talk to it through the front door."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import REDIS_URL, running_stack, temporary_database
from tests.e2e.client import KEY_CACHE_TTL_SECONDS, Tenant
from vocalbridge_devstack.stack import StackConfig

# Simulated providers, one per delivery scenario, so that no test's failures (and
# open circuit breakers) leak into another's. vendorA and vendorB never fail here.
PROVIDER_ENV = {
    "VB_SIMULATED_PROVIDERS": "vendorA,vendorB,down,dead,dead2,flaky,throttled,picky,slow",
    "VB_PROVIDER_SEED": "42",
    "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORA_LATENCY_MS": "5",
    "VB_PROVIDER_VENDORB_LATENCY_MS": "5",
    **{f"VB_PROVIDER_{name}_FAILURE_RATE": "1" for name in ("DOWN", "DEAD", "DEAD2", "THROTTLED", "PICKY")},
    **{f"VB_PROVIDER_{name}_LATENCY_MS": "0" for name in ("DOWN", "DEAD", "DEAD2", "FLAKY", "THROTTLED", "PICKY")},
    "VB_PROVIDER_FLAKY_FAILURE_RATE": "0",
    "VB_PROVIDER_FLAKY_FAIL_FIRST": "3",
    "VB_PROVIDER_THROTTLED_FAILURE_KIND": "rate_limited",
    "VB_PROVIDER_THROTTLED_RETRY_AFTER_MS": "800",
    "VB_PROVIDER_PICKY_FAILURE_KIND": "bad_request",
    "VB_PROVIDER_SLOW_FAILURE_RATE": "0",
    "VB_PROVIDER_SLOW_LATENCY_MS": "3000",
    "VB_DELIVERY_BACKOFF_BASE_MS": "2",
    "VB_DELIVERY_BACKOFF_CAP_MS": "1000",
    "VB_BREAKER_FAILURE_THRESHOLD": "3",
    "VB_BREAKER_RESET_TIMEOUT_MS": "500",
    "VB_RELAY_POLL_INTERVAL_MS": "100",
}


def limits_env(redis_url: str = REDIS_URL) -> dict[str, str]:
    """Rate-limit and budget counters in Redis (required: no in-process fallback in tests),
    under a key prefix of this stack's own; limit changes seen within 0.2 s."""
    return {
        "VB_REDIS_URL": redis_url,
        "VB_REDIS_KEY_PREFIX": f"vbtest:{uuid.uuid4().hex[:12]}:",
        "VB_LIMITS_STORE": "redis",
        "VB_LIMITS_CACHE_TTL_SECONDS": "0.2",
    }


@pytest.fixture(scope="session")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            extra_env={
                "VB_AUTH_KEY_CACHE_TTL_SECONDS": str(KEY_CACHE_TTL_SECONDS),
                **PROVIDER_ENV,
                **limits_env(),
            },
        )
        async with running_stack(config) as stack:
            yield stack


@pytest.fixture(scope="session")
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="session")
def new_tenant(stack, http):
    async def create(display_name: str = "Tenant") -> Tenant:
        response = await http.post(
            "/v1/tenants",
            json={"displayName": display_name},
            headers={"Authorization": f"Bearer {stack.operator_key}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return Tenant(http, body["tenant"], body["apiKey"])

    return create


def pytest_terminal_summary(terminalreporter) -> None:
    """The summary lines of the bulk suites (tests/e2e/summary.py), at the end of the run."""
    from tests.e2e.summary import LINES

    if LINES:
        terminalreporter.section("summary lines")
        for line in LINES:
            terminalreporter.write_line(line)
