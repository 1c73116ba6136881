"""Spend budgets through the front door (Envoy → auth → conversation → billing), on the
session stack with its counters in Redis: concurrent turns cannot overshoot, refused turns
bill nothing, the ledger agrees with what clients were told, and windows reset."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

from tests.e2e.client import error_reason, violated_fields
from tests.e2e.test_billing_exactly_once import wait_for_ledger
from tests.e2e.test_conversation import say

# The documented bound (README, "Limits and budgets"): what turns in flight may spend beyond
# their reservation. The simulated providers count prompt tokens as the gateway does and stop
# at max_output_tokens, so a reservation is exact here: the bound is 0.
OVERSHOOT_BOUND_MICROS = 0
PROMPT = "Hi there."


async def capped_agent(tenant, max_output_tokens: int = 5) -> str:
    """An agent with no fallback and a small output cap: each turn's reservation (its worst
    case) equals its cost once the reply is cut at the cap."""
    response = await tenant.post(
        "/v1/agents",
        {
            "displayName": "Capped",
            "systemPrompt": "Be brief.",
            "primaryProvider": "vendorA",
            "parameters": {"maxOutputTokens": max_output_tokens},
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["name"]


async def new_session(tenant, agent: str) -> dict:
    response = await tenant.post("/v1/sessions", {"agent": agent})
    assert response.status_code == 200, response.text
    return response.json()


async def set_budget(tenant, name: str, limit_micros: int, **fields) -> dict:
    response = await tenant.patch(
        f"/v1/{name}", {"limitMicros": str(limit_micros), **fields}, params={"allowMissing": "true"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def turn_cost(tenant, agent: str) -> int:
    response = await say(tenant, await new_session(tenant, agent), PROMPT)
    assert response.status_code == 200, response.text
    assert response.json()["assistantMessage"]["status"] == "MESSAGE_STATUS_TRUNCATED"  # cut at the cap
    return int(response.json()["usage"]["costMicros"])


async def test_fifty_concurrent_turns_against_a_budget_that_fits_ten(new_tenant):
    probe = await new_tenant("Probe")
    cost = await turn_cost(probe, await capped_agent(probe))
    tenant = await new_tenant("Budgeted")
    agent = await capped_agent(tenant)
    sessions = [await new_session(tenant, agent) for _ in range(50)]
    budget = 10 * cost
    await set_budget(tenant, "budgets/tenant", budget)
    await asyncio.sleep(0.5)  # the limits cache of every process (0.2 s here)

    responses = await asyncio.gather(*(say(tenant, session, PROMPT) for session in sessions))
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    told = sum(int(r.json()["usage"]["costMicros"]) for r in served)
    assert 1 <= len(served) <= 10 + OVERSHOOT_BOUND_MICROS // cost
    assert told <= budget + OVERSHOOT_BOUND_MICROS
    assert refused and all(r.status_code == 429 for r in refused), {r.status_code for r in refused}
    for response in refused:
        assert error_reason(response) == "BUDGET_EXCEEDED"
        assert response.headers["x-should-retry"] == "false"
    # The ledger holds exactly the served turns, at exactly what their clients were told.
    turns, billed = await wait_for_ledger(tenant, len(served))
    assert (turns, billed) == (len(served), told)
    await asyncio.sleep(1)  # nothing more arrives later
    assert (await wait_for_ledger(tenant, len(served), timeout=0)) == (len(served), told)
    # The budget shows the same: spent, nothing held, the rest remaining.
    usage = (await tenant.get("/v1/budgets/tenant")).json()["usage"]
    assert (int(usage["spentMicros"]), int(usage.get("reservedMicros", "0"))) == (told, 0)
    assert int(usage["remainingMicros"]) == budget - told
    # A refused turn kept nothing: its session has no messages, and its key runs once there is room.
    refused_session = sessions[responses.index(refused[0])]
    messages = (await tenant.get(f"/v1/{refused_session['name']}/messages")).json()
    assert not messages.get("messages")


async def test_a_turn_that_does_not_fit_is_refused_before_any_provider_call_and_its_key_freed(new_tenant):
    tenant = await new_tenant()
    agent = await capped_agent(tenant, max_output_tokens=400)
    session = await new_session(tenant, agent)
    await set_budget(tenant, f"budgets/{agent.split('/')[1]}", 500)  # less than one worst case
    await asyncio.sleep(0.5)
    key = uuid.uuid4().hex
    refused = await say(tenant, session, PROMPT, key=key)
    assert refused.status_code == 429 and error_reason(refused) == "BUDGET_EXCEEDED"
    assert refused.headers["x-should-retry"] == "false"
    details = next(d for d in refused.json()["details"] if d["@type"].endswith("ErrorInfo"))
    assert details["metadata"]["budget"] == f"budgets/{agent.split('/')[1]}"
    assert int(details["metadata"]["requiredMicros"]) > 500
    # Nothing billed, nothing stored; with room, the same idempotency key runs the turn.
    assert (await tenant.get("/v1/usage:summary")).json()["totals"].get("turns", "0") == "0"
    await set_budget(tenant, f"budgets/{agent.split('/')[1]}", 10_000_000)
    await asyncio.sleep(0.5)
    assert (await say(tenant, session, PROMPT, key=key)).status_code == 200


async def test_a_budget_resets_at_the_end_of_its_window(new_tenant):
    # The cost of a turn from another tenant: a probe turn of this one could share the first window
    # (windows are aligned to the epoch), and the window's seed from the ledger would rightly count it.
    probe = await new_tenant("Probe")
    cost = await turn_cost(probe, await capped_agent(probe))
    tenant = await new_tenant()
    agent = await capped_agent(tenant)
    budget = await set_budget(tenant, "budgets/tenant", cost, period="BUDGET_PERIOD_FIXED_WINDOW", windowDuration="4s")
    await asyncio.sleep(0.5)
    # Start right after a window begins, so the two turns below fall in one window.
    end = datetime.fromisoformat(budget["usage"]["windowEndTime"].replace("Z", "+00:00")).timestamp()
    if end - time.time() < 2.5:
        await asyncio.sleep(max(0.0, end - time.time()) + 0.05)
    first = await say(tenant, await new_session(tenant, agent), PROMPT)
    assert first.status_code == 200, first.text
    second = await say(tenant, await new_session(tenant, agent), PROMPT)
    assert second.status_code == 429 and error_reason(second) == "BUDGET_EXCEEDED"
    window_end = next(d for d in second.json()["details"] if d["@type"].endswith("ErrorInfo"))["metadata"][
        "windowEndTime"
    ]
    await asyncio.sleep(datetime.fromisoformat(window_end.replace("Z", "+00:00")).timestamp() - time.time() + 0.05)
    third = await say(tenant, await new_session(tenant, agent), PROMPT)
    assert third.status_code == 200, third.text
    usage = (await tenant.get("/v1/budgets/tenant")).json()["usage"]
    assert usage["windowStartTime"] == window_end and int(usage["spentMicros"]) == cost


async def test_bad_budget_values_are_400_with_field_violations(new_tenant):
    tenant = await new_tenant()
    cases = [
        ({"limitMicros": "0"}, {"budget.limit_micros"}),
        ({"limitMicros": "-5"}, {"budget.limit_micros"}),
        ({"limitMicros": "10", "period": "BUDGET_PERIOD_FIXED_WINDOW"}, {"budget.window_duration"}),
        (
            {"limitMicros": "10", "period": "BUDGET_PERIOD_FIXED_WINDOW", "windowDuration": "0.5s"},
            {"budget.window_duration"},
        ),
        ({"limitMicros": "10", "windowDuration": "60s"}, {"budget.window_duration"}),
    ]
    for body, fields in cases:
        response = await tenant.patch("/v1/budgets/tenant", body, params={"allowMissing": "true"})
        assert response.status_code == 400, (body, response.text)
        assert violated_fields(response) == fields, body
    for body in ({"requestsPerMinute": "0"}, {"tokensPerMinute": "-1"}, {"requestsPerMinute": "1000001"}):
        response = await tenant.patch("/v1/rateLimits/tenant", body, params={"allowMissing": "true"})
        assert response.status_code == 400, (body, response.text)
        assert violated_fields(response) == {
            f"rate_limit.{'requests_per_minute' if 'requestsPerMinute' in body else 'tokens_per_minute'}"
        }
    # Malformed JSON and unknown fields are refused at the edge like everywhere else.
    response = await tenant.patch("/v1/budgets/tenant", {"limitMicros": "10", "surprise": 1})
    assert response.status_code == 400
    assert (await tenant.get("/v1/budgets")).json().get("budgets", []) == []


async def test_a_read_only_key_cannot_change_limits_and_another_tenant_cannot_see_them(new_tenant):
    tenant = await new_tenant("Owner")
    other = await new_tenant("Other")
    await set_budget(tenant, "budgets/tenant", 1_000_000)
    limit = await tenant.patch("/v1/rateLimits/tenant", {"requestsPerMinute": "1000"}, params={"allowMissing": "true"})
    assert limit.status_code == 200
    reader = await tenant.create_key(["SCOPE_READ"])
    assert (await tenant.http.get("/v1/budgets/tenant", headers=tenant.headers(reader))).status_code == 200
    for method, path, body in (
        ("PATCH", "/v1/budgets/tenant", {"limitMicros": "1"}),
        ("PATCH", "/v1/rateLimits/tenant", {"requestsPerMinute": "1"}),
        ("DELETE", "/v1/budgets/tenant", None),
        ("DELETE", "/v1/rateLimits/tenant", None),
    ):
        response = await tenant.http.request(method, path, json=body, headers=tenant.headers(reader))
        assert response.status_code == 403 and error_reason(response) == "SCOPE_INSUFFICIENT", (method, path)
    for path in ("/v1/budgets/tenant", "/v1/rateLimits/tenant"):
        assert (await other.get(path)).status_code == 404
        assert (await other.delete(path)).status_code == 404
    assert (await other.get("/v1/budgets")).json().get("budgets", []) == []
    assert (await other.get("/v1/rateLimits")).json().get("rateLimits", []) == []
    # Still the owner's, unchanged.
    assert (await tenant.get("/v1/budgets/tenant")).json()["limitMicros"] == "1000000"
    assert (await tenant.get("/v1/rateLimits/tenant")).json()["requestsPerMinute"] == "1000"


async def test_speech_on_its_own_spends_the_same_budget(new_tenant):
    tenant = await new_tenant()
    text = "Budgets hold for speech too."
    cost = 15 * len(text)  # the seed price of a synthesized character
    await set_budget(tenant, "budgets/tenant", cost)
    await asyncio.sleep(0.5)
    said = await tenant.post("/v1/voice:synthesize", {"text": text, "voice": "espeak/en-us"})
    assert said.status_code == 200, said.text
    assert int(said.json()["usage"]["costMicros"]) == cost
    refused = await tenant.post("/v1/voice:synthesize", {"text": text, "voice": "espeak/en-us"})
    assert refused.status_code == 429 and error_reason(refused) == "BUDGET_EXCEEDED"
    assert refused.headers["x-should-retry"] == "false"
    usage = (await tenant.get("/v1/budgets/tenant")).json()["usage"]
    assert (int(usage["spentMicros"]), int(usage["remainingMicros"])) == (cost, 0)
    turns, billed = await wait_for_ledger(tenant, 1)
    assert (turns, billed) == (1, cost)
