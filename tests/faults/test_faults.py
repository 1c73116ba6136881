"""Faults under load, end to end: real processes, real Envoy, PostgreSQL, while clients send
text turns, whole or streamed (each with an Idempotency-Key of its own, retried with the same
key):

  (a) conversation killed with SIGKILL, restarted by the stack's supervisor;
  (b) billing stopped, then started, and killed with SIGKILL while it catches up;
  (c) PostgreSQL killed (every backend at once) and started again;
  (d) providers failing: 30% of the calls (with and without a fallback), 100% of the
      primary's (the fallback must deliver), slower than an attempt may take, and down with
      no fallback at all (the turn fails: nothing may be billed);
  (e) auth killed: Envoy fails closed (nothing gets through, every answer a JSON Status);
  (f) agents killed: turns in sessions whose agent version conversation has cached go on.

Provider faults (d) hold throughout, in their own sessions; the others come one after the
other, each while the load runs, VB_FAULT_SCALE rounds of them (1 here; `make soak` runs 10).
After recovery every turn a client saw succeed is in its session's history once and billed
once at the cost the client was told; no failed turn is billed; the ledger's total is the
sum of those costs; no idempotency record is left behind. One summary line gives the counts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from tests.faults.load import (
    SUMMARY_LINES,
    Load,
    Reconciliation,
    Turn,
    ledger_totals,
    reconcile,
    wait_for_ledger,
)
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner

SCALE = int(os.environ.get("VB_FAULT_SCALE", "1"))
CLIENTS = int(os.environ.get("VB_FAULT_CLIENTS", "8"))

# Session kinds: (primary, fallback, sessions, share of the load).
KINDS = {
    "healthy": ("vendorA", "vendorB", 4, 6),
    "shaky": ("shaky", "vendorB", 2, 2),
    "shaky-alone": ("shaky2", "", 2, 2),
    "primary-down": ("down", "vendorB", 2, 2),
    "slow": ("sluggish", "vendorB", 2, 1),
    "unserved": ("down", "", 1, 1),
}
# Kinds whose every turn must succeed: a fallback that always answers.
FALLBACK_KINDS = ("healthy", "shaky", "primary-down", "slow")


@dataclass
class Run:
    load: Load
    tenant_id: str
    api_key: str
    # fault → [(start, end)] on the monotonic clock, while the fault held
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # auth down: what requests without a valid key got
    unauthenticated: list[httpx.Response] = field(default_factory=list)
    # agents down: the turn in a session whose agent version was never read, then after it
    uncached: list[Turn] = field(default_factory=list)
    result: Reconciliation | None = None
    line: str = ""

    def window(self, fault: str, start: float) -> None:
        self.windows.setdefault(fault, []).append((start, time.monotonic()))

    def sent_during(self, fault: str) -> list:
        return [pair for start, end in self.windows.get(fault, []) for pair in self.load.sent_between(start, end)]


async def _json(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


async def _post(http: httpx.AsyncClient, path: str, body: dict, headers: dict) -> dict:
    """A set-up call, retried while the answer is a 5xx: right after a fault, a service's first
    transaction on a connection the database dropped fails (the pool is then renewed)."""
    for _ in range(50):
        response = await http.post(path, json=body, headers=headers)
        if response.status_code < 500:
            break
        await asyncio.sleep(0.2)
    return await _json(response)


async def _setup(stack, http: httpx.AsyncClient) -> tuple[str, str, dict[str, list[str]]]:
    created = await _json(
        await http.post(
            "/v1/tenants",
            json={"displayName": "Faults"},
            headers={"Authorization": f"Bearer {stack.operator_key}"},
        )
    )
    api_key = created["apiKey"]["secret"]
    auth = {"Authorization": f"Bearer {api_key}"}
    sessions: dict[str, list[str]] = {}
    for kind, (primary, fallback, count, _) in KINDS.items():
        agent = await _json(
            await http.post(
                "/v1/agents",
                json={
                    "displayName": kind,
                    "systemPrompt": "You answer questions about faults.",
                    "primaryProvider": primary,
                    "fallbackProvider": fallback,
                },
                headers=auth,
            )
        )
        sessions[kind] = [
            (await _json(await http.post("/v1/sessions", json={"agent": agent["name"]}, headers=auth)))["name"]
            for _ in range(count)
        ]
    return created["tenant"]["name"].split("/")[1], api_key, sessions


async def _hold(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _round(run: Run, stack, http: httpx.AsyncClient, postgres) -> None:
    # (a) conversation killed mid-turn; the supervisor restarts it.
    started = time.monotonic()
    await stack.kill_and_wait_restart("conversation")
    run.window("conversation killed", started)
    await _hold(1.5)

    # (b) billing stopped while turns are served, then started: usage waits in the outbox.
    await stack.stop_service("billing")
    started = time.monotonic()
    await _hold(3.0)
    run.window("billing stopped", started)
    await stack.start_service("billing")
    # ... and killed with SIGKILL as soon as it records the backlog: a batch it may have
    # recorded without the relay hearing so is sent again, and must count once.
    recorded = (await ledger_totals(http, run.api_key))[0]
    deadline = time.monotonic() + 10
    while (await ledger_totals(http, run.api_key))[0] == recorded and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    started = time.monotonic()
    await stack.kill_and_wait_restart("billing")
    run.window("billing killed while catching up", started)
    await _hold(1.0)

    # (c) PostgreSQL killed and started again after 2 s.
    started = time.monotonic()
    await asyncio.to_thread(postgres.restart, 2.0)
    run.window("postgres restarted", started)
    await _hold(2.0)

    # (e) auth killed: Envoy must refuse everything, with a JSON Status.
    await stack.stop_service("auth")
    started = time.monotonic()
    await _hold(0.5)
    signer = IdentitySigner(stack.identity_secret.encode())
    session = run.load.sessions["healthy"][0]
    body = {"content": "let me in"}
    run.unauthenticated += [
        await http.post(f"/v1/{session}/messages", json=body, headers={"Idempotency-Key": "no-key"}),
        await http.post(
            f"/v1/{session}/messages",
            json=body,
            headers={"Authorization": "Bearer vb_not_a_key", "Idempotency-Key": "bad-key"},
        ),
        # A forged identity header, as if auth had passed the request: Envoy must not trust it.
        await http.post(
            f"/v1/{session}/messages",
            json=body,
            headers={
                IDENTITY_HEADER: signer.mint(run.tenant_id, "key_forged", ["admin"]),
                "Idempotency-Key": "forged",
            },
        ),
    ]
    await _hold(1.5)
    run.window("auth killed", started)
    await stack.start_service("auth")
    await _hold(1.0)

    # (f) agents killed: sessions whose agent version is cached go on. A new agent's session,
    # never used, shows the outage is real: its turn cannot read the agent version.
    auth = {"Authorization": f"Bearer {run.api_key}"}
    agent = await _post(
        http,
        "/v1/agents",
        {"displayName": "uncached", "primaryProvider": "vendorA", "fallbackProvider": "vendorB"},
        auth,
    )
    uncached_session = await _post(http, "/v1/sessions", {"agent": agent["name"]}, auth)
    await run.load.touch_every_session()
    await stack.stop_service("agents")
    started = time.monotonic()
    await _hold(0.5)
    uncached = run.load.new_turn(uncached_session["name"], "uncached")
    response, _ = await run.load.post(uncached)
    uncached.responses.append(response)
    await _hold(2.5)
    run.window("agents killed", started)
    await stack.start_service("agents")
    # The same key once agents is back: the turn runs now.
    run.uncached.append(await run.load.run_turn(uncached))
    await _hold(1.0)


@pytest.fixture(scope="module")
async def fault_run(fault_stack, private_postgres):
    stack = fault_stack
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15, limits=httpx.Limits(max_connections=64)) as http:
        tenant_id, api_key, sessions = await _setup(stack, http)
        load = Load(
            http,
            api_key,
            sessions,
            clients=CLIENTS,
            weights={kind: share for kind, (*_, share) in KINDS.items()},
        )
        run = Run(load, tenant_id, api_key)
        load.start()
        try:
            await _hold(2.0)
            for _ in range(SCALE):
                await _round(run, stack, http, private_postgres)
        finally:
            await load.stop()
        succeeded = sum(turn.outcome == "succeeded" for turn in load.turns)
        await wait_for_ledger(http, api_key, succeeded, timeout=60)
        run.result = await reconcile(http, api_key, private_postgres.url, tenant_id, load.turns)
    run.line = run.result.line(SCALE, time.monotonic() - began)
    SUMMARY_LINES.append(run.line)
    print(run.line)
    streamed = [turn for turn in load.turns if turn.stream]
    print(f"  streamed: {len(streamed)} turns, {sum(t.outcome == 'succeeded' for t in streamed)} succeeded")
    print("  answers:", dict(run.result.statuses.most_common()))
    for fault, windows in run.windows.items():
        answers = Counter(f"{r.status} {r.reason}".strip() for _, r in run.sent_during(fault))
        print(f"  while {fault}:", dict(answers.most_common()))
        after = [pair for _, end in windows for pair in load.sent_between(end, end + 3.0)]
        answers = Counter(f"{r.status} {r.reason}".strip() for _, r in after)
        print(f"  in the 3 s after {fault}:", dict(answers.most_common()))
    spans = [(start, end + 3.0) for windows in run.windows.values() for start, end in windows]
    elsewhere: dict[str, list[int]] = {}
    for turn in load.turns:
        for response in turn.responses:
            if response.status == 200 or response.reason == "PROVIDERS_EXHAUSTED":
                continue
            if not any(start <= response.sent < end for start, end in spans):
                answer = f"{response.status} {response.reason} ({turn.kind})"
                elsewhere.setdefault(answer, []).append(round(response.sent - began))
    print("  other failures (seconds into the run):")
    for answer, seconds in sorted(elsewhere.items(), key=lambda item: -len(item[1])):
        print(f"    {answer}: {len(seconds)} at {sorted(set(seconds))}")
    return run


def test_every_turn_seen_to_succeed_is_kept_and_billed_once(fault_run):
    result = fault_run.result
    assert result.succeeded > 0 and result.retried > 0, fault_run.line
    assert result.problems == [], "\n".join(result.problems[:30])
    assert (result.lost, result.duplicates, result.orphaned_keys, result.gave_up) == (0, 0, 0, 0), fault_run.line
    assert result.undelivered_events == 0, fault_run.line
    assert result.billed == result.succeeded == result.ledger_turns, fault_run.line
    assert result.ledger_cost == result.client_cost, fault_run.line
    assert result.replayed > 0, fault_run.line
    # Both kinds of text turn went through the faults: SendMessage and StreamMessage.
    assert {turn.stream for turn in fault_run.load.turns if turn.outcome == "succeeded"} == {False, True}


def test_failed_turns_are_not_billed(fault_run):
    unserved = [turn for turn in fault_run.load.turns if turn.kind == "unserved"]
    assert unserved and all(turn.outcome == "failed" for turn in unserved)
    # Failed turns are in the count the first test holds the ledger to: billed == succeeded.
    assert fault_run.result.failed >= len(unserved)


def test_a_fallback_that_answers_delivers_every_turn(fault_run):
    turns = [turn for turn in fault_run.load.turns if turn.kind in FALLBACK_KINDS]
    failed = Counter(turn.kind for turn in turns if turn.outcome != "succeeded")
    assert not failed, failed
    for kind in ("primary-down", "slow"):
        served = Counter((turn.provider, turn.fallback_used) for turn in turns if turn.kind == kind)
        assert served and set(served) == {("vendorB", True)}, (kind, served)
    # The 30% failures were retried on the same provider, mostly with success.
    shaky = Counter(turn.provider for turn in turns if turn.kind == "shaky")
    assert shaky["shaky"] > shaky["vendorB"], shaky


def test_envoy_fails_closed_while_auth_is_down(fault_run):
    during = fault_run.sent_during("auth killed")
    assert during, "no request was sent while auth was down"
    answers = Counter((response.status, response.reason, response.json_status) for _, response in during)
    assert all(status not in (0, 200) and json_status for status, _, json_status in answers), answers
    for response in fault_run.unauthenticated:
        assert response.status_code != 200, response.text
        body = response.json()
        assert isinstance(body.get("code"), int) and body.get("message"), response.text


def test_cached_sessions_keep_working_while_agents_is_down(fault_run):
    fresh = [
        (turn, response)
        for turn, response in fault_run.sent_during("agents killed")
        if turn.kind in FALLBACK_KINDS and response is turn.responses[0]
    ]
    assert fresh, "no turn started while agents was down"
    assert all(response.status == 200 for _, response in fresh), Counter(
        (response.status, response.reason) for _, response in fresh
    )
    for turn in fault_run.uncached:
        first = turn.responses[0]
        assert (first.status, first.reason, first.json_status) == (503, "AGENTS_UNAVAILABLE", True), first
        assert turn.outcome == "succeeded", turn.responses


def test_turns_are_served_while_billing_is_down(fault_run):
    fresh = [
        (turn, response)
        for fault in ("billing stopped", "billing killed while catching up")
        for turn, response in fault_run.sent_during(fault)
        if turn.kind in FALLBACK_KINDS and response is turn.responses[0]
    ]
    assert fresh and all(response.status == 200 for _, response in fresh), Counter(
        (response.status, response.reason) for _, response in fresh
    )
