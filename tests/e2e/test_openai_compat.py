"""The OpenAI-compatible API through Envoy, driven by the official `openai` SDK as an application
would drive OpenAI: only its base URL and API key changed. Completions (whole and streamed),
the models list, errors as the SDK's own exception types, a retry by the SDK billed once,
fallback, tenant isolation, scopes, limits, and malformed bodies in OpenAI's error shape.
The main cases run on PostgreSQL (the session's stack) and on SQLite (a stack of this module's)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import httpx2
import openai
import pytest

from tests.conftest import running_stack
from tests.e2e.client import KEY_CACHE_TTL_SECONDS, Tenant
from tests.e2e.conftest import PROVIDER_ENV, limits_env
from tests.e2e.test_billing_exactly_once import all_event_names, ledger, wait_for_ledger
from vocalbridge_devstack.stack import Stack, StackConfig

PROMPT = "You are the Acme helper."


@pytest.fixture(scope="module")
async def sqlite_stack(tmp_path_factory) -> AsyncIterator[Stack]:
    """The embedded default: one SQLite file per service (what `make run` starts)."""
    root = tmp_path_factory.mktemp("sqlite-stack")
    config = StackConfig.with_free_ports(
        data_dir=root / "var",
        log_dir=root / "logs",
        extra_env={"VB_AUTH_KEY_CACHE_TTL_SECONDS": str(KEY_CACHE_TTL_SECONDS), **PROVIDER_ENV, **limits_env()},
    )
    async with running_stack(config) as stack:
        yield stack


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request) -> Stack:
    """The case on each store: the session's PostgreSQL stack, then this module's SQLite one."""
    stack: Stack = request.getfixturevalue("stack" if request.param == "postgresql" else "sqlite_stack")
    return stack


async def tenant_of(stack: Stack, http: httpx.AsyncClient, display_name: str = "OpenAI client") -> Tenant:
    response = await http.post(
        "/v1/tenants", json={"displayName": display_name}, headers={"Authorization": f"Bearer {stack.operator_key}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Tenant(http, body["tenant"], body["apiKey"])


async def new_agent(tenant: Tenant, primary: str = "vendorA", fallback: str | None = "vendorB", **parameters) -> str:
    body: dict = {"displayName": "Model", "systemPrompt": PROMPT, "primaryProvider": primary}
    if fallback:
        body["fallbackProvider"] = fallback
    if parameters:
        body["parameters"] = parameters
    response = await tenant.post("/v1/agents", body)
    assert response.status_code == 200, response.text
    return response.json()["name"]


def sdk(stack: Stack, key: str, **options) -> openai.AsyncOpenAI:
    """The official client, pointed at the gateway: base URL and key, nothing else."""
    return openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key, **options)


def extension(obj) -> dict:
    """The `vocalbridge` object OpenAI's SDK keeps as an extra field."""
    return obj.model_extra["vocalbridge"]


async def test_a_completion_through_the_sdk(backend):
    async with httpx.AsyncClient(base_url=backend.base_url, timeout=15) as http:
        tenant = await tenant_of(backend, http)
        agent = await new_agent(tenant)
        client = sdk(backend, tenant.key)
        completion = await client.chat.completions.create(
            model=agent, messages=[{"role": "user", "content": "What are your opening hours?"}]
        )
        assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
        assert completion.model == agent
        (choice,) = completion.choices
        assert choice.finish_reason == "stop" and choice.message.role == "assistant"
        text = choice.message.content
        # The agent's system prompt came first; the conversation is the caller's.
        assert text.startswith("[vendorA] Turn 1.") and '"What are your opening hours?"' in text
        assert 'My instructions begin: "You are the Acme helper."' in text
        usage = completion.usage
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        vb = extension(completion)
        assert vb["provider"] == "vendorA" and vb["fallback_used"] is False and vb["session"] is None
        assert vb["cost_micros"] == 2 * usage.total_tokens  # vendorA's price: 2 micros a token

        # The bare agent id names the same model; the whole conversation is sent each time.
        second = await client.chat.completions.create(
            model=agent.removeprefix("agents/"),
            messages=[
                {"role": "user", "content": "What are your opening hours?"},
                {"role": "assistant", "content": text},
                {"role": "user", "content": "And on Sundays?"},
            ],
        )
        assert second.choices[0].message.content.startswith("[vendorA] Turn 2.")
        # One usage event per completion, in the tenant's ledger at what the client was told.
        turns, cost = await wait_for_ledger(tenant, 2)
        assert (turns, cost) == (2, vb["cost_micros"] + extension(second)["cost_micros"])
        events = (await tenant.get("/v1/usageEvents")).json()["usageEvents"]
        assert {e["agent"] for e in events} == {agent} and all(not e.get("session") for e in events)


async def test_a_streamed_completion_through_the_sdk(backend):
    async with httpx.AsyncClient(base_url=backend.base_url, timeout=15) as http:
        tenant = await tenant_of(backend, http)
        agent = await new_agent(tenant)
        client = sdk(backend, tenant.key)
        session = await tenant.post("/v1/sessions", {"agent": agent})
        assert session.status_code == 200, session.text
        session_name = session.json()["name"]
        # In a session (VocalBridge-Session) the reply is stored: the deltas must join to it.
        stream = await client.chat.completions.create(
            model=agent,
            messages=[{"role": "user", "content": "Tell me about delivery times please"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"VocalBridge-Session": session_name, "Idempotency-Key": uuid.uuid4().hex},
        )
        chunks = [chunk async for chunk in stream]
        deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert len([d for d in deltas if d]) > 1, "the reply arrived in one piece, not streamed"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert {c.id for c in chunks} == {chunks[0].id} and {c.model for c in chunks} == {agent}
        finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
        usage_chunk = chunks[-1]
        assert usage_chunk.choices == [] and usage_chunk.usage is not None
        assert all(c.usage is None for c in chunks[:-1])
        messages = (await tenant.get(f"/v1/{session_name}/messages")).json()["messages"]
        assert [m["role"] for m in messages] == ["USER", "ASSISTANT"]
        assert "".join(deltas) == messages[1]["content"]
        assert messages[0]["content"] == "Tell me about delivery times please"
        vb = extension(finishing[0])
        assert vb["session"] == session_name and vb["message"] == messages[1]["name"]

        # Stateless, as OpenAI's: the raw bytes are OpenAI's SSE, ending with data: [DONE].
        async with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": agent, "messages": [{"role": "user", "content": "Hi"}], "stream": True},
            headers=tenant.headers(),
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            raw = (await response.aread()).decode()
        events = [line for line in raw.split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
        texts = [json.loads(e[6:]) for e in events[:-1]]
        assert all(t["object"] == "chat.completion.chunk" and "usage" not in t for t in texts)
        _, cost = await wait_for_ledger(tenant, 2)
        assert cost == vb["cost_micros"] + texts[-1]["vocalbridge"]["cost_micros"]


async def test_models_are_the_tenants_agents(stack, http, new_tenant):
    tenant, other = await new_tenant(), await new_tenant()
    mine = {await new_agent(tenant), await new_agent(tenant)}
    theirs = await new_agent(other)
    models = await sdk(stack, tenant.key).models.list()
    assert {model.id for model in models.data} == mine
    assert all(model.object == "model" and model.owned_by == tenant.name for model in models.data)
    assert {model.id for model in (await sdk(stack, other.key).models.list()).data} == {theirs}
    # A read-only key may list the models but not create completions.
    reader = await tenant.create_key(["SCOPE_READ"])
    assert {model.id for model in (await sdk(stack, reader).models.list()).data} == mine
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk(stack, reader, max_retries=0).chat.completions.create(
            model=next(iter(mine)), messages=[{"role": "user", "content": "Hi"}]
        )
    assert refused.value.status_code == 403
    assert refused.value.body["type"] == "permission_error" and refused.value.body["code"] == "scope_insufficient"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert await ledger(tenant) == (0, 0)


async def test_another_tenants_agent_is_not_a_model(stack, new_tenant):
    owner, intruder = await new_tenant(), await new_tenant()
    agent = await new_agent(owner)
    client = sdk(stack, intruder.key, max_retries=0)
    for model in (agent, agent.removeprefix("agents/")):
        with pytest.raises(openai.NotFoundError) as refused:
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.body["code"] == "model_not_found", refused.value.body
        assert refused.value.response.headers["x-should-retry"] == "false"
        # Streamed requests are refused the same way, before any byte of a stream.
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], stream=True)
    # The owner's own use works, and nothing was billed to either tenant for the intruder.
    ok = await sdk(stack, owner.key).chat.completions.create(model=agent, messages=[{"role": "user", "content": "Hi"}])
    assert ok.choices[0].message.content
    assert await wait_for_ledger(owner, 1) == (1, extension(ok)["cost_micros"])
    assert await ledger(intruder) == (0, 0)


async def test_errors_are_the_sdks_own_exceptions(stack, new_tenant):
    tenant = await new_tenant()
    agent = await new_agent(tenant, max_output_tokens=50)
    client = sdk(stack, tenant.key, max_retries=0)
    hello = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await sdk(stack, "vb_not_a_key", max_retries=0).chat.completions.create(model=agent, messages=hello)
    assert unauthenticated.value.body["type"] == "authentication_error"
    # Fields this gateway does not implement are refused, never ignored, naming the parameter.
    with pytest.raises(openai.BadRequestError) as unsupported:
        await client.chat.completions.create(
            model=agent,
            messages=hello,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    assert unsupported.value.body["code"] == "unsupported_parameter"
    assert unsupported.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as two:
        await client.chat.completions.create(model=agent, messages=hello, n=2)
    assert two.value.body["param"] == "n"
    # Overrides stay within the agent's bounds.
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.chat.completions.create(model=agent, messages=hello, max_tokens=51)
    assert too_long.value.body["param"] == "max_tokens" and "50" in too_long.value.body["message"]
    with pytest.raises(openai.BadRequestError) as too_hot:
        await client.chat.completions.create(model=agent, messages=hello, temperature=2.5)
    assert too_hot.value.body["param"] == "temperature"
    assert too_hot.value.response.headers["x-should-retry"] == "false"
    # Within bounds they apply: a cap of 3 tokens cuts the reply, and a stop sequence ends it.
    short = await client.chat.completions.create(model=agent, messages=hello, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens <= 3
    stopped = await client.chat.completions.create(model=agent, messages=hello, stop=["said"], user="end-user-7")
    assert stopped.choices[0].message.content == "[vendorA] Turn 1. You "
    assert await wait_for_ledger(tenant, 2) == (2, extension(short)["cost_micros"] + extension(stopped)["cost_micros"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[1, 2]", "body"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "user", "content": "a"}], "model": "b"}', "body"),
        (b'{"messages": [{"role": "user", "content": "a"}]}', "model"),
        (b'{"model": "agents/agt_x", "messages": []}', "messages"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "wizard", "content": "a"}]}', "messages[0].role"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "user", "content": 7}]}', "messages[0].content"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "user", "content": "a"}], "stream": "yes"}', "stream"),
        (b'{"model": "agents/agt_x", "messages": [{"role": "user", "content": "a"}], "top_p": 0}', "top_p"),
        (b"\xff\xfe", "body"),
    ],
)
async def test_malformed_bodies_get_openais_400(stack, http, new_tenant, body, param):
    tenant = await new_tenant()
    response = await http.post(
        "/v1/chat/completions", content=body, headers=tenant.headers(**{"content-type": "application/json"})
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert error["message"]


async def test_a_body_over_the_limit_is_openais_413(http, new_tenant):
    tenant = await new_tenant()
    content = "x" * (2 * 1024 * 1024)
    response = await http.post(
        "/v1/chat/completions",
        json={"model": "agents/agt_x", "messages": [{"role": "user", "content": content}]},
        headers=tenant.headers(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_fallback_is_visible_in_the_response(stack, new_tenant):
    tenant = await new_tenant()
    agent = await new_agent(tenant, primary="dead", fallback="vendorB")
    completion = await sdk(stack, tenant.key).chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "Anyone there?"}]
    )
    assert completion.choices[0].message.content.startswith("[vendorB]")
    vb = extension(completion)
    assert vb["fallback_used"] is True and vb["provider"] == "vendorB"
    assert [(a["provider"], a["outcome"]) for a in vb["attempts"]][-1] == ("vendorB", "SUCCESS")
    assert {a["provider"] for a in vb["attempts"][:-1]} == {"dead"}
    # Billed at the provider that answered: vendorB, 3 micros a token.
    assert vb["cost_micros"] == 3 * completion.usage.total_tokens
    # Neither provider answering: a 5xx the SDK may retry, naming the attempts, billing nothing.
    hopeless = await new_agent(tenant, primary="dead", fallback="dead2")
    with pytest.raises(openai.APIStatusError) as failed:
        await sdk(stack, tenant.key, max_retries=0).chat.completions.create(
            model=hopeless, messages=[{"role": "user", "content": "Anyone?"}]
        )
    assert failed.value.status_code >= 500 and failed.value.body["type"] == "server_error"
    assert "dead" in failed.value.body["message"] and "dead2" in failed.value.body["message"]
    assert await wait_for_ledger(tenant, 1) == (1, vb["cost_micros"])


class LoseFirstResponse(httpx2.AsyncBaseTransport):
    """A network that delivers the first request and loses its response (the client times
    out after the server did the work): the SDK's retry is then the same request again."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.requests: list[httpx2.Request] = []
        self.responses: list[httpx2.Response] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self.responses.append(response)
        if len(self.requests) == 1:
            raise httpx2.ReadTimeout("the response was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_request_retried_by_the_sdk_with_an_idempotency_key_is_billed_once(backend):
    async with httpx.AsyncClient(base_url=backend.base_url, timeout=15) as http:
        tenant = await tenant_of(backend, http)
        agent = await new_agent(tenant)
        hello = [{"role": "user", "content": "Bill me once"}]
        lossy = LoseFirstResponse()
        async with httpx2.AsyncClient(transport=lossy) as network:
            client = sdk(backend, tenant.key, http_client=network, max_retries=2)
            key = uuid.uuid4().hex
            completion = await client.chat.completions.create(
                model=agent, messages=hello, extra_headers={"Idempotency-Key": key}
            )
        # The SDK sent it twice with the same key; the server ran it once and replayed it.
        assert len(lossy.requests) == 2
        assert {r.headers["idempotency-key"] for r in lossy.requests} == {key}
        first, second = lossy.responses
        assert first.status_code == second.status_code == 200
        assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
        assert second.content == first.content
        assert completion.id == json.loads(first.content)["id"]
        cost = extension(completion)["cost_micros"]
        # A streaming retry with the same key replays the stored completion as chunks.
        stream = await sdk(backend, tenant.key).chat.completions.create(
            model=agent,
            messages=hello,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"Idempotency-Key": key},
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            completion.choices[0].message.content
        )
        assert chunks[-1].usage.total_tokens == completion.usage.total_tokens
        # The same key with another request is refused, not replayed.
        with pytest.raises(openai.ConflictError) as reused:
            await sdk(backend, tenant.key, max_retries=0).chat.completions.create(
                model=agent,
                messages=[{"role": "user", "content": "Something else"}],
                extra_headers={"Idempotency-Key": key},
            )
        assert reused.value.body["code"] == "idempotency_key_reused", reused.value.body
        assert reused.value.response.headers["x-should-retry"] == "false"  # the SDK would retry a 409
        await asyncio.sleep(0.5)  # the relay's poll interval is 0.1 s: anything billed twice would show
        assert await wait_for_ledger(tenant, 1) == (1, cost)
        assert len(await all_event_names(tenant)) == 1

        # Without a key the same lost response makes the SDK run the request twice: each is billed.
        lossy = LoseFirstResponse()
        async with httpx2.AsyncClient(transport=lossy) as network:
            await sdk(backend, tenant.key, http_client=network, max_retries=2).chat.completions.create(
                model=agent, messages=hello
            )
        assert len(lossy.requests) == 2 and "idempotency-key" not in lossy.requests[0].headers
        turns, _ = await wait_for_ledger(tenant, 3)
        assert turns == 3


async def test_rate_limits_and_budgets_apply_with_openais_429(stack, new_tenant):
    limited = await new_tenant()
    agent = await new_agent(limited)
    response = await limited.patch("/v1/rateLimits/tenant", {"requestsPerMinute": "3"}, params={"allowMissing": "true"})
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)  # the limits cache of every process (0.2 s here)
    client = sdk(stack, limited.key, max_retries=0)
    refused = None
    for _ in range(6):
        try:
            await client.chat.completions.create(model=agent, messages=[{"role": "user", "content": "Hi"}])
        except openai.RateLimitError as error:
            refused = error
            break
    assert refused is not None, "the request limit never applied"
    assert refused.body["type"] == "rate_limit_error" and refused.body["code"] == "rate_limit_exceeded"
    assert int(refused.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in refused.response.headers  # waiting helps: the SDK may retry

    budgeted = await new_tenant()
    capped = await new_agent(budgeted, fallback=None)
    response = await budgeted.patch("/v1/budgets/tenant", {"limitMicros": "1"}, params={"allowMissing": "true"})
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)
    with pytest.raises(openai.RateLimitError) as over:
        await sdk(stack, budgeted.key, max_retries=0).chat.completions.create(
            model=capped, messages=[{"role": "user", "content": "Hi"}]
        )
    assert over.value.body["type"] == "insufficient_quota" and over.value.body["code"] == "insufficient_quota"
    assert over.value.response.headers["x-should-retry"] == "false"  # until the window resets
    assert await ledger(budgeted) == (0, 0)


async def test_a_session_header_works_only_with_the_callers_own_session_and_its_agent(stack, new_tenant):
    owner, intruder = await new_tenant(), await new_tenant()
    agent, other_agent = await new_agent(owner), await new_agent(owner)
    session = (await owner.post("/v1/sessions", {"agent": agent})).json()["name"]
    hello = [{"role": "user", "content": "Hi"}]
    # Another tenant naming the session, with an agent of its own: no such session for it.
    mine = await new_agent(intruder)
    with pytest.raises(openai.NotFoundError) as hidden:
        await sdk(stack, intruder.key, max_retries=0).chat.completions.create(
            model=mine,
            messages=hello,
            extra_headers={"VocalBridge-Session": session, "Idempotency-Key": uuid.uuid4().hex},
        )
    assert hidden.value.body["code"] == "session_not_found", hidden.value.body
    client = sdk(stack, owner.key, max_retries=0)
    # The session's own tenant, but another agent as the model: refused, not answered by either.
    with pytest.raises(openai.BadRequestError) as mismatch:
        await client.chat.completions.create(
            model=other_agent,
            messages=hello,
            extra_headers={"VocalBridge-Session": session, "Idempotency-Key": uuid.uuid4().hex},
        )
    assert mismatch.value.body["code"] == "session_agent_mismatch" and mismatch.value.body["param"] == "model"
    # In a session the history is the server's: the client sends only the new user message.
    with pytest.raises(openai.BadRequestError) as whole:
        await client.chat.completions.create(
            model=agent,
            messages=[*hello, {"role": "assistant", "content": "Hello"}, *hello],
            extra_headers={"VocalBridge-Session": session, "Idempotency-Key": uuid.uuid4().hex},
        )
    assert whole.value.body["param"] == "messages"
    history = (await owner.get(f"/v1/{session}/messages")).json().get("messages", [])
    assert history == []
    assert await ledger(owner) == (0, 0) and await ledger(intruder) == (0, 0)
    # The session's second turn sees its first: the history is kept server-side.
    for content in ("My name is Ada.", "What did I say?"):
        reply = await client.chat.completions.create(
            model=agent,
            messages=[{"role": "user", "content": content}],
            extra_headers={"VocalBridge-Session": session, "Idempotency-Key": uuid.uuid4().hex},
        )
    assert reply.choices[0].message.content.startswith("[vendorA] Turn 2.")
    assert 'Before that you said: "My name is Ada."' in reply.choices[0].message.content


async def test_a_retry_while_the_first_request_still_runs_waits_for_its_result(stack, http, new_tenant):
    """The SDK retries 409: a repeat of a running request (IDEMPOTENCY_KEY_IN_USE) is retried
    until the first one has finished, and then gets its result; the provider ran once."""
    tenant = await new_tenant()
    agent = await new_agent(tenant, primary="slow", fallback=None)  # answers after 3 s
    key = uuid.uuid4().hex
    request = {"model": agent, "messages": [{"role": "user", "content": "Take your time"}]}
    first = asyncio.create_task(
        http.post("/v1/chat/completions", json=request, headers=tenant.headers(**{"Idempotency-Key": key}), timeout=30)
    )
    await asyncio.sleep(1.0)
    assert not first.done()
    retried = await sdk(stack, tenant.key, max_retries=6).chat.completions.with_raw_response.create(
        **request, extra_headers={"Idempotency-Key": key}
    )
    original = await first
    assert original.status_code == 200 and "idempotent-replayed" not in original.headers
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.retries_taken >= 1  # it was told 409 at least once, and retried
    assert retried.parse().id == original.json()["id"]
    assert await wait_for_ledger(tenant, 1) == (1, original.json()["vocalbridge"]["cost_micros"])
