"""Every RPC of the compiled contract classified (who may call it) with a factory that builds a
valid request against one tenant's resources; shared by the isolation matrix and the hostile
input suite, so that an RPC added to the contract is covered by both once it is classified here.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import io
import math
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from tests.e2e import api_surface
from tests.e2e.api_surface import HttpCall, Method, http_body
from tests.e2e.client import Tenant
from vocalbridge_common import scopes


class Kind(enum.Enum):
    """Who may call an RPC, and what a tenant's data it touches."""

    READ = "tenant-read"  # any key of the tenant
    WRITE = "tenant-write"  # write or admin keys of the tenant
    ADMIN_READ = "tenant-admin-read"  # admin keys only (API keys), reads
    ADMIN_WRITE = "tenant-admin-write"  # admin keys only, changes
    OPERATOR = "operator-only"
    INTERNAL = "internal"  # the services' own identity; no API key
    CALLER = "caller"  # any authenticated caller, about itself
    SHARED = "shared-read"  # the same for every tenant (the price book), no tenant data


class Expect(enum.Enum):
    NOT_FOUND = "not-found"  # names one of A's resources
    NOTHING_OF_A = "nothing-of-a"  # a list or report: NOT_FOUND, or OK without anything of A's
    OWN = "own"  # names nothing of A's: OK, about the caller's own tenant only
    # Names A's agent by its id in a limit of the caller's own (limits name their target by
    # id; one on an id the caller has no agent with applies to nothing): NOT_FOUND, or OK
    # for the caller's tenant alone. Either way nothing of A's changes.
    NO_EFFECT = "no-effect"
    REFUSED = "refused"  # operator-only / internal: never OK for a tenant key


@dataclass
class World:
    """Tenant A's resources (the victim), tenant B (the intruder), and the keys to try."""

    tenant_a: str  # tenants/ten_…
    a_admin: str
    a_write: str
    a_read: str
    b_admin: str
    agent: str  # agents/agt_…
    agent_etag: str
    session: str  # sessions/ses_…
    api_key: str  # apiKeys/key_… (one of A's, not used to call)
    idempotency_key: str  # one A used for a turn
    marker: str  # in A's display names and contents
    wav_b64: str
    operator: str

    @property
    def tenant_id(self) -> str:
        return self.tenant_a.split("/")[1]

    @property
    def agent_id(self) -> str:
        return self.agent.split("/")[1]

    @property
    def key_id(self) -> str:
        return self.api_key.split("/")[1]

    def a_ids(self) -> list[str]:
        return [self.tenant_id, self.agent_id, self.session.split("/")[1], self.key_id, self.marker]


Factory = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    kind: Kind
    expect: Expect
    request: Factory
    # Client-streaming RPCs: the messages after the first (the first is `request`).
    more: Callable[[World], list[dict[str, Any]]] | None = None
    idempotent: bool = False  # needs an Idempotency-Key
    # A read of A's own that must show A's things (proves the factory asks the right question).
    shows_a: bool = False


def _turn(content: str) -> Factory:
    return lambda w: {"session": w.session, "content": content}


MATRIX: dict[str, Entry] = {
    # agents
    "vocalbridge.agents.v1.AgentService.CreateAgent": Entry(
        Kind.WRITE, Expect.OWN, lambda w: {"agent": {"displayName": "B's own", "primaryProvider": "vendorA"}}
    ),
    "vocalbridge.agents.v1.AgentService.GetAgent": Entry(
        Kind.READ, Expect.NOT_FOUND, lambda w: {"name": w.agent}, shows_a=True
    ),
    "vocalbridge.agents.v1.AgentService.ListAgents": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000}, shows_a=True
    ),
    "vocalbridge.agents.v1.AgentService.UpdateAgent": Entry(
        Kind.WRITE,
        Expect.NOT_FOUND,
        lambda w: {
            "agent": {"name": w.agent, "displayName": "Hijacked", "etag": w.agent_etag},
            "updateMask": "displayName",
        },
    ),
    "vocalbridge.agents.v1.AgentService.DeleteAgent": Entry(
        Kind.WRITE, Expect.NOT_FOUND, lambda w: {"name": w.agent, "etag": w.agent_etag}
    ),
    "vocalbridge.agents.v1.AgentService.ListAgentVersions": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"parent": w.agent}, shows_a=True
    ),
    "vocalbridge.agents.v1.AgentService.GetAgentVersion": Entry(
        Kind.READ, Expect.NOT_FOUND, lambda w: {"name": f"{w.agent}/versions/1"}, shows_a=True
    ),
    # auth: the operator's
    "vocalbridge.auth.v1.AuthService.CreateTenant": Entry(
        Kind.OPERATOR, Expect.REFUSED, lambda w: {"displayName": "Made by a tenant"}
    ),
    "vocalbridge.auth.v1.AuthService.GetTenant": Entry(Kind.OPERATOR, Expect.REFUSED, lambda w: {"name": w.tenant_a}),
    "vocalbridge.auth.v1.AuthService.ListTenants": Entry(Kind.OPERATOR, Expect.REFUSED, lambda w: {"pageSize": 1000}),
    # auth: a tenant's keys, limits and budgets
    "vocalbridge.auth.v1.AuthService.CreateApiKey": Entry(
        Kind.ADMIN_WRITE, Expect.OWN, lambda w: {"apiKey": {"displayName": "B's own", "scopes": ["SCOPE_READ"]}}
    ),
    "vocalbridge.auth.v1.AuthService.GetApiKey": Entry(
        Kind.ADMIN_READ, Expect.NOT_FOUND, lambda w: {"name": w.api_key}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.ListApiKeys": Entry(
        Kind.ADMIN_READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.RevokeApiKey": Entry(
        Kind.ADMIN_WRITE, Expect.NOT_FOUND, lambda w: {"name": w.api_key}
    ),
    "vocalbridge.auth.v1.AuthService.RotateApiKey": Entry(
        Kind.ADMIN_WRITE, Expect.NOT_FOUND, lambda w: {"name": w.api_key}
    ),
    "vocalbridge.auth.v1.AuthService.GetRateLimit": Entry(
        Kind.READ, Expect.NOT_FOUND, lambda w: {"name": f"rateLimits/{w.agent_id}"}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.ListRateLimits": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.UpdateRateLimit": Entry(
        Kind.ADMIN_WRITE,
        Expect.NOT_FOUND,
        lambda w: {
            "rateLimit": {"name": f"rateLimits/{w.key_id}", "requestsPerMinute": "1"},
            "updateMask": "requestsPerMinute",
            "allowMissing": True,
        },
    ),
    "vocalbridge.auth.v1.AuthService.DeleteRateLimit": Entry(
        Kind.ADMIN_WRITE, Expect.NO_EFFECT, lambda w: {"name": f"rateLimits/{w.agent_id}"}
    ),
    "vocalbridge.auth.v1.AuthService.GetBudget": Entry(
        Kind.READ, Expect.NOT_FOUND, lambda w: {"name": f"budgets/{w.agent_id}"}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.ListBudgets": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000}, shows_a=True
    ),
    "vocalbridge.auth.v1.AuthService.UpdateBudget": Entry(
        Kind.ADMIN_WRITE,
        Expect.NO_EFFECT,
        lambda w: {
            "budget": {"name": f"budgets/{w.agent_id}", "limitMicros": "1"},
            "updateMask": "limitMicros",
            "allowMissing": True,
        },
    ),
    "vocalbridge.auth.v1.AuthService.DeleteBudget": Entry(
        Kind.ADMIN_WRITE, Expect.NO_EFFECT, lambda w: {"name": f"budgets/{w.agent_id}"}
    ),
    "vocalbridge.auth.v1.AuthService.GetTenantLimits": Entry(
        Kind.INTERNAL, Expect.REFUSED, lambda w: {"tenant": w.tenant_id}
    ),
    "vocalbridge.auth.v1.AuthService.GetCallerIdentity": Entry(Kind.CALLER, Expect.OWN, lambda w: {}),
    # billing
    "vocalbridge.billing.v1.BillingService.RecordUsage": Entry(
        Kind.INTERNAL,
        Expect.REFUSED,
        lambda w: {
            "events": [
                {
                    "name": f"usageEvents/evt_{uuid.uuid4().hex}",
                    "tenant": w.tenant_a,
                    "agent": w.agent,
                    "session": w.session,
                    "provider": "vendorA",
                    "promptTokens": "1000000",
                    "costMicros": "1000000000",
                }
            ]
        },
    ),
    "vocalbridge.billing.v1.BillingService.ListUsageEvents": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000, "session": w.session}, shows_a=True
    ),
    "vocalbridge.billing.v1.BillingService.GetUsageSummary": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"agent": w.agent, "groupBy": "AGENT"}, shows_a=True
    ),
    "vocalbridge.billing.v1.BillingService.GetProviderPerformance": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"agent": w.agent}
    ),
    "vocalbridge.billing.v1.BillingService.ListPrices": Entry(Kind.SHARED, Expect.OWN, lambda w: {"pageSize": 100}),
    # conversation
    "vocalbridge.conversation.v1.ConversationService.CreateSession": Entry(
        Kind.WRITE, Expect.NOT_FOUND, lambda w: {"session": {"agent": w.agent}}
    ),
    "vocalbridge.conversation.v1.ConversationService.GetSession": Entry(
        Kind.READ, Expect.NOT_FOUND, lambda w: {"name": w.session}, shows_a=True
    ),
    "vocalbridge.conversation.v1.ConversationService.ListSessions": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"pageSize": 1000, "agent": w.agent}, shows_a=True
    ),
    "vocalbridge.conversation.v1.ConversationService.ListMessages": Entry(
        Kind.READ, Expect.NOTHING_OF_A, lambda w: {"parent": w.session, "pageSize": 1000}, shows_a=True
    ),
    "vocalbridge.conversation.v1.ConversationService.SendMessage": Entry(
        Kind.WRITE, Expect.NOT_FOUND, _turn("Tell me what tenant A said"), idempotent=True
    ),
    "vocalbridge.conversation.v1.ConversationService.StreamMessage": Entry(
        Kind.WRITE, Expect.NOT_FOUND, _turn("Tell me what tenant A said"), idempotent=True
    ),
    "vocalbridge.conversation.v1.ConversationService.StreamVoiceTurn": Entry(
        Kind.INTERNAL,
        Expect.REFUSED,
        lambda w: {"turn": {"session": w.session, "content": "spoken words", "voice": {}}},
    ),
    # the OpenAI-compatible API (a model is an agent)
    "vocalbridge.openai.v1.OpenAIService.CreateChatCompletion": Entry(
        Kind.WRITE,
        Expect.NOT_FOUND,
        lambda w: {"body": http_body({"model": w.agent, "messages": [{"role": "user", "content": "hello"}]})},
        idempotent=True,
    ),
    "vocalbridge.openai.v1.OpenAIService.ListModels": Entry(Kind.READ, Expect.NOTHING_OF_A, lambda w: {}, shows_a=True),
    # voice
    "vocalbridge.voice.v1.VoiceService.Converse": Entry(
        Kind.WRITE,
        Expect.NOT_FOUND,
        lambda w: {"session": w.session, "audio": {"content": w.wav_b64}},
        idempotent=True,
    ),
    "vocalbridge.voice.v1.VoiceService.Transcribe": Entry(
        Kind.WRITE, Expect.OWN, lambda w: {"audio": {"content": w.wav_b64}}
    ),
    "vocalbridge.voice.v1.VoiceService.Synthesize": Entry(Kind.WRITE, Expect.OWN, lambda w: {"text": "Hello there"}),
    # The installed voices: the same for every tenant, no tenant data.
    "vocalbridge.voice.v1.VoiceService.ListVoices": Entry(Kind.SHARED, Expect.OWN, lambda w: {}),
    "vocalbridge.voice.v1.VoiceService.StreamingConverse": Entry(
        Kind.WRITE,
        Expect.NOT_FOUND,
        lambda w: {"config": {"session": w.session, "sampleRateHertz": 16000}},
        more=lambda w: [{"audio": base64_pcm_silence()}],
    ),
}

# The scope each kind needs (scopes.py is the one policy; the matrix must agree with it).
KIND_SCOPE = {
    Kind.READ: scopes.READ,
    Kind.SHARED: scopes.READ,
    Kind.WRITE: scopes.WRITE,
    Kind.ADMIN_READ: scopes.ADMIN,
    Kind.ADMIN_WRITE: scopes.ADMIN,
    Kind.OPERATOR: scopes.OPERATOR,
    Kind.INTERNAL: scopes.INTERNAL,
    Kind.CALLER: scopes.ANY,
}
WRITES = {Kind.WRITE, Kind.ADMIN_WRITE}
TENANT_KINDS = {Kind.READ, Kind.WRITE, Kind.ADMIN_READ, Kind.ADMIN_WRITE}


def base64_pcm_silence() -> str:
    return base64.b64encode(b"\x00\x00" * 1600).decode()


def entry_for(method: Method) -> Entry:
    entry = MATRIX.get(method.full_name)
    if entry is None:
        pytest.fail(
            f"{method.full_name} is not classified in tests/e2e/rpc_matrix.py MATRIX: add it with its "
            "kind (tenant-read, tenant-write, operator-only, internal, ...) and a request factory"
        )
    return entry


METHODS = api_surface.methods()
# (method, transport): gRPC through Envoy for every RPC, and each JSON route.
CASES = [pytest.param(m, "grpc", id=f"{m.name}-grpc") for m in METHODS] + [
    pytest.param(m, f"http{i}", id=f"{m.name}-http{i}") for m in METHODS for i, _ in enumerate(m.bindings)
]


# --------------------------------------------------------------------------- the world


def _wav_b64(seconds: float = 0.6, rate: int = 16000) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            frames += int(8000 * math.sin(2 * math.pi * 220 * i / rate)).to_bytes(2, "little", signed=True)
        out.writeframes(bytes(frames))
    return base64.b64encode(buffer.getvalue()).decode()


async def _tenant(http: httpx.AsyncClient, operator_key: str, display_name: str) -> Tenant:
    response = await http.post(
        "/v1/tenants", json={"displayName": display_name}, headers={"Authorization": f"Bearer {operator_key}"}
    )
    assert response.status_code == 200, response.text
    return Tenant(http, response.json()["tenant"], response.json()["apiKey"])


async def build_world(http: httpx.AsyncClient, operator_key: str) -> World:
    """Tenant A with one of everything (an agent with two versions, a session with a billed
    turn, spare keys, limits and a budget), and tenant B with nothing."""
    marker = f"isomarker{uuid.uuid4().hex[:10]}"
    a, b = await _tenant(http, operator_key, f"Victim {marker}"), await _tenant(http, operator_key, "Intruder")
    agent = await a.post(
        "/v1/agents",
        {
            "displayName": f"Agent {marker}",
            "systemPrompt": f"Secret instructions {marker}",
            "primaryProvider": "vendorA",
            "fallbackProvider": "vendorB",
        },
    )
    assert agent.status_code == 200, agent.text
    name = agent.json()["name"]
    updated = await a.patch(
        f"/v1/{name}",
        {"displayName": f"Agent {marker} v2", "etag": agent.json()["etag"]},
        params={"updateMask": "displayName"},
    )
    assert updated.status_code == 200, updated.text
    session = await a.post("/v1/sessions", {"agent": name, "externalUserId": f"user-{marker}"})
    assert session.status_code == 200, session.text
    idempotency_key = f"iso-{uuid.uuid4().hex}"
    turn = await a.http.post(
        f"/v1/{session.json()['name']}/messages",
        json={"content": f"My secret is {marker}"},
        headers=a.headers(**{"Idempotency-Key": idempotency_key}),
    )
    assert turn.status_code == 200, turn.text
    keys = {}
    for scope in ("SCOPE_WRITE", "SCOPE_READ"):
        keys[scope] = await a.create_key([scope])
    spare = await a.post("/v1/apiKeys", {"displayName": f"Spare {marker}", "scopes": ["SCOPE_READ"]})
    assert spare.status_code == 200, spare.text
    agent_id = name.split("/")[1]
    for path, body in (
        (f"/v1/rateLimits/{agent_id}", {"requestsPerMinute": "1000000"}),
        (f"/v1/rateLimits/{spare.json()['name'].split('/')[1]}", {"requestsPerMinute": "1000000"}),
        (f"/v1/budgets/{agent_id}", {"limitMicros": "1000000000"}),
    ):
        field_name = next(iter(body))
        made = await a.patch(path, body, params={"allowMissing": "true", "updateMask": field_name})
        assert made.status_code == 200, made.text
    world = World(
        tenant_a=a.name,
        a_admin=a.key,
        a_write=keys["SCOPE_WRITE"],
        a_read=keys["SCOPE_READ"],
        b_admin=b.key,
        agent=name,
        agent_etag=updated.json()["etag"],
        session=session.json()["name"],
        api_key=spare.json()["name"],
        idempotency_key=idempotency_key,
        marker=marker,
        wav_b64=_wav_b64(),
        operator=operator_key,
    )
    # The turn's usage reaches billing through the outbox relay: wait, so A's state is still.
    for _ in range(100):
        events = await a.get("/v1/usageEvents", params={"session": world.session})
        if events.status_code == 200 and events.json().get("usageEvents"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"tenant A's usage event never reached billing: {events.text}")
    return world


# --------------------------------------------------------------------------- calling


@dataclass
class Outcome:
    ok: bool
    not_found: bool
    denied: bool  # PERMISSION_DENIED / UNAUTHENTICATED
    status: str  # for messages
    text: str  # everything the caller got back


def _bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


async def call(
    stack: Any,
    http: httpx.AsyncClient,
    method: Method,
    transport: str,
    world: World,
    request: dict[str, Any],
    key: str,
    entry: Entry,
) -> Outcome:
    """Calls `method` with `request` and `key` through Envoy: `grpc`, or `http<i>` for its i-th
    JSON route."""
    extra = {"idempotency-key": f"iso-{uuid.uuid4().hex}"} if entry.idempotent else {}
    if transport == "grpc":
        payloads = [method.request(request).SerializeToString()]
        if entry.more is not None:
            payloads += [method.request(m).SerializeToString() for m in entry.more(world)]
        outcome = await api_surface.call_grpc(
            _channel(stack), method, payloads, [*_bearer(key), *extra.items()], target=stack.grpc_target
        )
        text = " ".join(r.decode("utf-8", "replace") for r in outcome.responses) + " " + outcome.details
        return Outcome(
            outcome.ok,
            outcome.code == grpc.StatusCode.NOT_FOUND,
            outcome.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED),
            f"{outcome.code.name} {outcome.reason()} {outcome.details[:200]}",
            text,
        )
    binding = method.bindings[int(transport.removeprefix("http"))]
    http_call: HttpCall = api_surface.http_call(binding, request)
    if method.raw_http_body and http_call.body is not None:
        content = base64.b64decode(request["body"]["data"])
        response = await api_surface.send_http(
            http,
            HttpCall(http_call.verb, http_call.path, http_call.params, None),
            {"authorization": f"Bearer {key}", "content-type": "application/json", **extra},
            content=content,
        )
    else:
        response = await api_surface.send_http(http, http_call, {"authorization": f"Bearer {key}", **extra})
    # A stream's error can come after a 200 status line, as an SSE event.
    streamed_error = response.status_code == 200 and '"error"' in response.text and method.server_streaming
    return Outcome(
        response.status_code == 200 and not streamed_error,
        response.status_code == 404,
        response.status_code in (401, 403),
        f"{response.status_code} {response.text[:300]}",
        response.text,
    )


_CHANNELS: dict[str, grpc.aio.Channel] = {}


def _channel(stack) -> grpc.aio.Channel:
    """One channel to Envoy for the module (a new connection per call costs more than the call)."""
    if stack.grpc_target not in _CHANNELS:
        _CHANNELS[stack.grpc_target] = grpc.aio.insecure_channel(stack.grpc_target)
    return _CHANNELS[stack.grpc_target]
