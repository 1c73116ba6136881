"""Prometheus metrics, scraped the way Prometheus would: every service's /metrics port and Envoy's
stats port, before and after a few turns through the front door, and the counters that must
move, moved. With two workers on one port, every scrape reports the turns of both."""

from __future__ import annotations

import asyncio
import base64

import grpc
import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_stack, temporary_database
from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc
from vocalbridge_common import topology
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_devstack.stack import StackConfig

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int, path: str = "/metrics") -> Samples:
    # A new connection per scrape, as Prometheus does: with workers, any of them may answer.
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200, response.text[:500]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def calls(samples: Samples, method: str, code: str = "OK") -> float:
    return total(samples, "vocalbridge_grpc_server_handling_seconds_count", grpc_method=method, grpc_code=code)


async def _agent_and_session(tenant, **agent_fields) -> str:
    agent = await tenant.post(
        "/v1/agents",
        {"displayName": "Metered", "systemPrompt": "Be brief.", "primaryProvider": "vendorA", **agent_fields},
    )
    assert agent.status_code == 200, agent.text
    session = await tenant.post("/v1/sessions", {"agent": agent.json()["name"]})
    assert session.status_code == 200, session.text
    return session.json()["name"]


async def test_every_endpoint_counts_the_turns_it_served(stack, new_tenant):
    ports = {name: stack.config.metrics_ports[name] for name in stack.config.services}
    assert ports.keys() == set(topology.SERVICES)
    before = {name: await scrape(port) for name, port in ports.items()}
    envoy_before = await scrape(stack.config.stats_port, "/stats/prometheus")

    tenant = await new_tenant("Metered")
    session = await _agent_and_session(tenant, voice={"voice": "espeak/en-us", "wordsPerMinute": 300})
    for number in range(3):
        turn = await tenant.http.post(
            f"/v1/{session}/messages",
            json={"content": f"metered turn {number}"},
            headers=tenant.headers(**{"Idempotency-Key": f"metered-{number}"}),
        )
        assert turn.status_code == 200, turn.text
    said = await tenant.post("/v1/voice:synthesize", {"text": "What time do you open?", "voice": "espeak/en-us"})
    assert said.status_code == 200, said.text
    spoken = await tenant.http.post(
        f"/v1/{session}/voice:converse",
        json={"audio": {"content": said.json()["audio"]["content"]}},
        headers=tenant.headers(**{"Idempotency-Key": "metered-voice"}),
    )
    assert spoken.status_code == 200, spoken.text
    assert base64.b64decode(spoken.json()["replyAudio"]["content"])

    after: dict[str, Samples] = {}
    for _ in range(100):  # billing hears of the turns through the relay, a moment later
        after = {name: await scrape(port) for name, port in ports.items()}
        if calls(after["billing"], "RecordUsage") > calls(before["billing"], "RecordUsage"):
            break
        await asyncio.sleep(0.1)

    def moved(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    # Requests by method and code, in every service.
    assert calls(after["auth"], "Check") - calls(before["auth"], "Check") >= 7
    assert calls(after["agents"], "CreateAgent") - calls(before["agents"], "CreateAgent") == 1
    assert calls(after["conversation"], "SendMessage") - calls(before["conversation"], "SendMessage") == 3
    # The spoken turn: voice hands it to conversation's internal StreamVoiceTurn.
    assert calls(after["conversation"], "StreamVoiceTurn") - calls(before["conversation"], "StreamVoiceTurn") == 1
    assert calls(after["billing"], "RecordUsage") > calls(before["billing"], "RecordUsage")
    assert calls(after["voice"], "Converse") - calls(before["voice"], "Converse") == 1
    # The turn metrics: three text turns and one spoken one, by vendorA; one attempt each.
    turns = "vocalbridge_turns_total"
    assert moved("conversation", turns, channel="text", outcome="complete", provider="vendorA") == 3
    assert moved("conversation", turns, channel="voice", outcome="complete", provider="vendorA") == 1
    assert moved("conversation", "vocalbridge_delivery_attempts_total", provider="vendorA", outcome="SUCCESS") == 4
    assert total(after["conversation"], "vocalbridge_breaker_state", provider="vendorA") == 0  # closed
    assert ("vocalbridge_relay_pending_events", frozenset()) in after["conversation"]
    assert moved("conversation", "vocalbridge_relay_delivered_events_total") >= 1
    # The speech engines' real-time factor: the question heard, the reply spoken.
    assert moved("voice", "vocalbridge_voice_real_time_factor_count", kind="stt") >= 1
    assert moved("voice", "vocalbridge_voice_real_time_factor_count", kind="tts", engine="espeak") >= 2

    # Envoy's own statistics, through the stats port: requests it routed to conversation.
    envoy_after = await scrape(stack.config.stats_port, "/stats/prometheus")
    routed = "envoy_cluster_upstream_rq_total"
    assert (
        total(envoy_after, routed, envoy_cluster_name="conversation")
        - total(envoy_before, routed, envoy_cluster_name="conversation")
        >= 4
    )


async def test_a_refusal_of_the_tenant_controls_is_counted(stack, new_tenant):
    """A tenant's own request limit, exceeded: auth.Check refuses with 429, and the auth service's
    endpoint counts the refusal by reason and level."""
    port = stack.config.metrics_ports["auth"]
    refusals = "vocalbridge_limit_refusals_total"
    before = total(await scrape(port), refusals, reason="RATE_LIMITED", level="tenant")
    tenant = await new_tenant("Refused")
    limited = await tenant.patch("/v1/rateLimits/tenant", {"requestsPerMinute": "3"}, params={"allowMissing": "true"})
    assert limited.status_code == 200, limited.text
    await asyncio.sleep(0.5)  # the limits cache of the auth process (0.2 s)
    statuses = [(await tenant.get("/v1/agents")).status_code for _ in range(8)]
    assert 429 in statuses, statuses
    after = total(await scrape(port), refusals, reason="RATE_LIMITED", level="tenant")
    assert after - before == statuses.count(429)


async def test_the_stats_port_serves_nothing_but_the_stats(stack):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.config.stats_port}", timeout=10) as client:
        for method, path in (("GET", "/config_dump"), ("POST", "/quitquitquit"), ("GET", "/stats"), ("GET", "/")):
            response = await client.request(method, path)
            assert response.status_code == 404, (method, path, response.status_code)
        assert (await client.post("/stats/prometheus")).status_code == 404
    await stack.wait_envoy_ready()  # and Envoy is still there


@pytest.fixture(scope="module")
async def two_workers(tmp_path_factory):
    root = tmp_path_factory.mktemp("metered-workers")
    with temporary_database() as database_url:
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            services=("auth", "agents", "billing", "conversation"),
            workers={"conversation": 2},
            extra_env={"VB_PROVIDER_VENDORA_FAILURE_RATE": "0", "VB_PROVIDER_VENDORA_LATENCY_MS": "0"},
        )
        async with running_stack(config) as stack:
            yield stack


async def test_one_scrape_of_a_service_with_two_workers_counts_both(two_workers):
    stack = two_workers
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as http:
        created = (
            await http.post(
                "/v1/tenants",
                json={"displayName": "Workers"},
                headers={"Authorization": f"Bearer {stack.operator_key}"},
            )
        ).json()
        key = {"Authorization": f"Bearer {created['apiKey']['secret']}"}
        agent = (
            await http.post("/v1/agents", json={"displayName": "W", "primaryProvider": "vendorA"}, headers=key)
        ).json()
        session = (await http.post("/v1/sessions", json={"agent": agent["name"]}, headers=key)).json()["name"]

    # A connection per turn, straight to the service's port: the kernel gives each to either worker.
    signer = IdentitySigner(stack.identity_secret.encode())
    identity = ((IDENTITY_HEADER, signer.mint(created["tenant"]["name"].split("/")[1], "key_w", ["write"])),)
    for number in range(24):
        async with grpc.aio.insecure_channel(
            stack.service_target("conversation"), options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            await conversation_service_pb2_grpc.ConversationServiceStub(channel).SendMessage(
                cs.SendMessageRequest(session=session, content=f"turn {number}"),
                metadata=(*identity, ("idempotency-key", f"m-{number}")),
                timeout=10,
            )
    # Each worker counted its own share, in its own file.
    shares = []
    for name in ("conversation", "conversation#2"):
        path = stack.metrics_dir / "conversation" / f"counter_{stack.children[name].started().pid}.db"
        families = MultiProcessCollector.merge([str(path)], accumulate=False)
        shares.append(sum(s.value for f in families for s in f.samples if s.name == "vocalbridge_turns_total"))
    assert sum(shares) == 24 and all(shares), f"turns counted per worker: {shares}"

    # Whichever worker answers, it reports the turns of both.
    for _ in range(6):
        samples = await scrape(stack.config.metrics_ports["conversation"])
        assert total(samples, "vocalbridge_turns_total", outcome="complete") == 24
        assert calls(samples, "SendMessage") == 24
