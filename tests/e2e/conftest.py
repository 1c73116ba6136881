"""The whole stack as real processes (every service and a real Envoy) on a
throw-away PostgreSQL database; tests talk to it through the front door."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import temporary_database
from tests.e2e.client import KEY_CACHE_TTL_SECONDS, Tenant
from vocalbridge_devstack.stack import Stack, StackConfig




@pytest.fixture(scope="session")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            extra_env={"VB_AUTH_KEY_CACHE_TTL_SECONDS": str(KEY_CACHE_TTL_SECONDS)},
        )
        stack = Stack(config)
        try:
            await stack.start()
            yield stack
        finally:
            await stack.stop()


@pytest.fixture(scope="session")
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="session")
def new_tenant(stack, http):
    async def create(display_name: str = "Tenant") -> Tenant:
        response = await http.post(
            "/v1/tenants", json={"displayName": display_name},
            headers={"Authorization": f"Bearer {stack.operator_key}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return Tenant(http, body["tenant"], body["apiKey"])

    return create
