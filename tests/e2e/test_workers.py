"""Worker mode of the stack runner: a service started as several processes on one port
(VB_<SVC>_WORKERS), the kernel spreading connections over them, every turn billed once
with a relay in each worker, and a worker that dies restarted on its own."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from tests.conftest import running_stack, temporary_database
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_devstack.stack import StackConfig, workers_from_env

PROVIDERS = {
    "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORA_LATENCY_MS": "0",
    "VB_RELAY_POLL_INTERVAL_MS": "50",
}


def test_workers_come_from_the_environment():
    assert workers_from_env({})["conversation"] == 1
    assert workers_from_env({"VB_CONVERSATION_WORKERS": "3"})["conversation"] == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="VB_AUTH_WORKERS"):
            workers_from_env({"VB_AUTH_WORKERS": bad})


@pytest.fixture(scope="module")
async def two_workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            services=("auth", "agents", "billing", "conversation"),
            workers={"conversation": 2},
            extra_env=PROVIDERS,
        )
        async with running_stack(config) as stack:
            yield stack


async def test_two_workers_share_the_port_and_bill_every_turn_once(two_workers):
    stack = two_workers
    assert [name for name in stack.children if name.startswith("conversation")] == ["conversation", "conversation#2"]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as http:
        created = (
            await http.post(
                "/v1/tenants",
                json={"displayName": "Workers"},
                headers={"Authorization": f"Bearer {stack.operator_key}"},
            )
        ).json()
        auth = {"Authorization": f"Bearer {created['apiKey']['secret']}"}
        agent = (
            await http.post(
                "/v1/agents",
                json={"displayName": "W", "primaryProvider": "vendorA", "fallbackProvider": "vendorB"},
                headers=auth,
            )
        ).json()
        session = (await http.post("/v1/sessions", json={"agent": agent["name"]}, headers=auth)).json()["name"]

        # Each gRPC channel is a connection of its own (no subchannel shared between channels),
        # which the kernel gives to either worker.
        signer = IdentitySigner(stack.identity_secret.encode())
        identity = ((IDENTITY_HEADER, signer.mint(created["tenant"]["name"].split("/")[1], "key_w", ["write"])),)
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        for number in range(24):
            async with grpc.aio.insecure_channel(
                stack.service_target("conversation"), options=own_connection
            ) as channel:
                stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
                await stub.SendMessage(
                    cs.SendMessageRequest(session=session, content=f"turn {number}"),
                    metadata=(*identity, ("idempotency-key", f"w-{number}")),
                    timeout=10,
                )
        logs = {name: (stack.config.log_dir / f"{name}.log").read_text() for name in ("conversation", "conversation#2")}
        assert all("ConversationService/SendMessage" in text for text in logs.values()), {
            k: v[-1500:] for k, v in logs.items()
        }

        # Both workers run a relay: every turn reaches the ledger exactly once.
        for _ in range(200):
            summary = (await http.get("/v1/usage:summary", headers=auth)).json()
            if int(summary.get("totals", {}).get("turns", 0)) >= 24:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a second delivery, if there were one, would land meanwhile
        summary = (await http.get("/v1/usage:summary", headers=auth)).json()
        assert int(summary["totals"]["turns"]) == 24


async def test_a_dead_worker_is_restarted_and_the_other_keeps_serving(two_workers):
    stack = two_workers
    second = stack.children["conversation#2"]
    before = second.started().pid
    stack.kill("conversation#2")
    for _ in range(200):
        process = second.process
        if process is not None and process.pid != before and process.returncode is None:
            break
        await asyncio.sleep(0.05)
    assert second.started().pid != before and second.restarts == 1
    assert stack.children["conversation"].started().returncode is None
    await stack.wait_serving("conversation")
