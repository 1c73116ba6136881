"""The fault suite's clients and its accounting.

Clients send text turns through Envoy (a quarter of them streamed as Server-Sent Events), each
with an Idempotency-Key of its own, and retry a turn with the same key until they get an
answer that settles it: 200 with the turn (for a stream: its last event), or its stored
response again, or PROVIDERS_EXHAUSTED three times over (no provider answered; the
service billed nothing and freed the key). Everything else (a 5xx, a reset connection, a
timeout, 409 IDEMPOTENCY_KEY_IN_USE while a killed worker's claim runs out) is retried. Some
turns that succeeded are sent once more with their key, as a client that missed the answer
would, and must get the same turn back.

Afterwards `reconcile` compares what the clients saw with what the system kept: the
sessions' histories, billing's ledger, the idempotency records and the outbox.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg

# What settles a turn as failed: the service says no provider answered, this many times.
EXHAUSTED_TRIES = 3
# A turn not settled after this long is given up (counted as failed; a turn given up that the
# system kept anyway shows as a turn billed without the client having seen it succeed).
GIVE_UP_SECONDS = 90.0
REQUEST_TIMEOUT_SECONDS = 15.0
# One succeeded turn in this many is sent again with its key and must replay.
REPLAY_EVERY = 7
# The share of turns streamed (StreamMessage as Server-Sent Events); the others are SendMessage.
STREAMED_SHARE = 0.25
# The summary lines of the suite's runs, printed at the end of the pytest session (conftest).
SUMMARY_LINES: list[str] = []


@dataclass
class Response:
    """One HTTP exchange of a turn, as the client saw it."""

    sent: float  # monotonic
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    reason: str = ""
    json_status: bool = True  # an error body that is a google.rpc.Status in JSON (200s: True)


@dataclass
class Turn:
    key: str
    session: str
    kind: str
    content: str
    stream: bool = False  # sent as StreamMessage (Server-Sent Events) rather than SendMessage
    responses: list[Response] = field(default_factory=list)
    outcome: str = "pending"  # succeeded | failed
    gave_up: bool = False
    user_message: str = ""
    assistant_message: str = ""
    provider: str = ""
    fallback_used: bool = False
    cost: int = 0
    replayed: bool = False
    replay_mismatch: str = ""

    @property
    def retried(self) -> bool:
        return len(self.responses) > 1


def _reason(body: object) -> str:
    if isinstance(body, dict):
        for detail in body.get("details", []) or []:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
                return str(detail.get("reason", ""))
    return ""


def _sse_events(text: str) -> list[dict]:
    """The JSON payloads of a Server-Sent Events body (`data: {...}` lines)."""
    events = []
    for line in text.splitlines():
        if line.startswith("data:"):
            try:
                events.append(json.loads(line[len("data:") :]))
            except ValueError:
                return events  # cut mid-event
    return events


def _is_status(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("message"), str)


class Load:
    """`clients` clients sending turns to `sessions` (kind → session names) until stopped."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str,
        sessions: dict[str, list[str]],
        *,
        clients: int,
        weights: dict[str, int],
        pause: float = 0.02,
        seed: int = 7,
    ) -> None:
        self.http = http
        self.api_key = api_key
        self.sessions = sessions
        self.clients = clients
        self.pause = pause
        self.turns: list[Turn] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random(seed)
        self._kinds = [kind for kind, weight in weights.items() for _ in range(weight)]
        self._counter = itertools.count(1)

    # -- one turn ----------------------------------------------------------------------

    async def post(self, turn: Turn) -> tuple[Response, dict | None]:
        """One request of `turn`: its answer, and the turn (messages, delivery, usage) when it
        is one. A stream is a turn only if it ends with the event that carries the turn."""
        sent = time.monotonic()
        try:
            answer = await self.http.post(
                f"/v1/{turn.session}/messages" + (":stream" if turn.stream else ""),
                json={"content": turn.content},
                headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": turn.key},
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except httpx.TransportError:
            return Response(sent, 0, "no answer"), None
        if answer.status_code == 200 and turn.stream:
            events = _sse_events(answer.text)
            final = events[-1] if events and "assistantMessage" in events[-1] else None
            return Response(sent, 200 if final else 0, "" if final else "stream cut short"), final
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code == 200:
            return Response(sent, 200), body if isinstance(body, dict) else None
        return Response(sent, answer.status_code, _reason(body), _is_status(body)), None

    async def run_turn(self, turn: Turn) -> Turn:
        """Sends `turn` until it is settled; returns it."""
        self.turns.append(turn)
        began = time.monotonic()
        exhausted = 0
        backoff = 0.05
        while True:
            response, body = await self.post(turn)
            turn.responses.append(response)
            if response.status == 200 and body is not None:
                self._succeeded(turn, body)
                break
            if response.reason == "PROVIDERS_EXHAUSTED":
                exhausted += 1
                if exhausted >= EXHAUSTED_TRIES:
                    turn.outcome = "failed"
                    return turn
            if time.monotonic() - began > GIVE_UP_SECONDS:
                turn.outcome, turn.gave_up = "failed", True
                return turn
            await asyncio.sleep(backoff * (0.5 + self._random.random()))
            backoff = min(backoff * 2, 1.0)
        if next(self._counter) % REPLAY_EVERY == 0:
            await self._replay(turn)
        return turn

    def _succeeded(self, turn: Turn, body: dict) -> None:
        turn.outcome = "succeeded"
        turn.user_message = body["userMessage"]["name"]
        turn.assistant_message = body["assistantMessage"]["name"]
        turn.provider = body["delivery"]["provider"]
        turn.fallback_used = bool(body["delivery"].get("fallbackUsed"))
        turn.cost = int(body["usage"].get("costMicros", "0"))

    async def _replay(self, turn: Turn) -> None:
        """The same key again: the same turn must come back (retrying what is not an answer)."""
        for _ in range(40):
            response, body = await self.post(turn)
            if response.status == 200 and body is not None:
                turn.replayed = True
                again = (body["assistantMessage"]["name"], int(body["usage"].get("costMicros", "0")))
                if again != (turn.assistant_message, turn.cost):
                    turn.replay_mismatch = f"first {(turn.assistant_message, turn.cost)}, then {again}"
                return
            await asyncio.sleep(0.1)

    def new_turn(self, session: str, kind: str) -> Turn:
        key = uuid.uuid4().hex
        return Turn(
            key=key,
            session=session,
            kind=kind,
            content=f"Question {key[:10]}: how do faults end?",
            stream=self._random.random() < STREAMED_SHARE,
        )

    # -- the clients -------------------------------------------------------------------

    async def _client(self) -> None:
        while not self._stopping.is_set():
            kind = self._random.choice(self._kinds)
            session = self._random.choice(self.sessions[kind])
            await self.run_turn(self.new_turn(session, kind))
            await asyncio.sleep(self.pause)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]

    async def stop(self) -> None:
        """Lets every client settle the turn it is on, then stops it."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def touch_every_session(self) -> None:
        """One turn in every session, so that each session's agent version is in conversation's cache."""
        await asyncio.gather(
            *(self.run_turn(self.new_turn(session, kind)) for kind, names in self.sessions.items() for session in names)
        )

    def sent_between(self, start: float, end: float) -> list[tuple[Turn, Response]]:
        """The requests sent in [start, end) (monotonic)."""
        return [(turn, r) for turn in self.turns for r in turn.responses if start <= r.sent < end]


# -- after recovery ----------------------------------------------------------------------


@dataclass
class Reconciliation:
    sent: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    gave_up: int = 0
    billed: int = 0
    duplicates: int = 0
    lost: int = 0
    orphaned_keys: int = 0
    undelivered_events: int = 0
    ledger_cost: int = 0
    client_cost: int = 0
    ledger_turns: int = 0
    replayed: int = 0
    problems: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def line(self, scale: int, seconds: float) -> str:
        return (
            f"fault suite (scale {scale}, {seconds:.0f} s): sent={self.sent} succeeded={self.succeeded} "
            f"retried={self.retried} failed={self.failed} billed={self.billed} duplicates={self.duplicates} "
            f"lost={self.lost} orphaned_keys={self.orphaned_keys} "
            f"ledger_cost={self.ledger_cost} client_cost={self.client_cost}"
        )


def _id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


async def history(http: httpx.AsyncClient, api_key: str, session: str) -> list[dict]:
    messages: list[dict] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"pageSize": 1000, **({"pageToken": token} if token else {})}
        page = await http.get(
            f"/v1/{session}/messages", params=params, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )
        assert page.status_code == 200, page.text
        body = page.json()
        messages += body.get("messages", [])
        token = body.get("nextPageToken", "")
        if not token:
            return messages


async def ledger_totals(http: httpx.AsyncClient, api_key: str) -> tuple[int, int]:
    """(turns, cost) of the tenant's usage summary, as the API reports it."""
    response = await http.get("/v1/usage:summary", headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    assert response.status_code == 200, response.text
    totals = response.json().get("totals", {})
    return int(totals.get("turns", "0")), int(totals.get("costMicros", "0"))


async def wait_for_ledger(http: httpx.AsyncClient, api_key: str, turns: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await ledger_totals(http, api_key))[0] < turns and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # a second delivery, if there were one, lands meanwhile


async def reconcile(
    http: httpx.AsyncClient, api_key: str, database_url: str, tenant_id: str, turns: list[Turn]
) -> Reconciliation:
    result = Reconciliation(
        sent=len(turns),
        succeeded=sum(t.outcome == "succeeded" for t in turns),
        retried=sum(t.retried for t in turns),
        failed=sum(t.outcome == "failed" for t in turns),
        gave_up=sum(t.gave_up for t in turns),
        replayed=sum(t.replayed for t in turns),
        client_cost=sum(t.cost for t in turns if t.outcome == "succeeded"),
    )
    for turn in turns:
        for response in turn.responses:
            result.statuses[f"{response.status} {response.reason}".strip()] += 1
        if turn.outcome == "pending":
            result.problems.append(f"turn {turn.key} was never settled")
        if turn.replay_mismatch:
            result.duplicates += 1
            result.problems.append(f"turn {turn.key} replayed differently: {turn.replay_mismatch}")
    succeeded = {t.key: t for t in turns if t.outcome == "succeeded"}
    by_assistant = {_id(t.assistant_message): t for t in succeeded.values()}
    by_user = {_id(t.user_message): t for t in succeeded.values()}
    lost: set[str] = set()

    # The histories: every succeeded turn's two messages, once; no complete message no client saw.
    sessions = sorted({t.session for t in turns})
    seen: Counter[str] = Counter()
    contents: dict[str, str] = {}
    for session in sessions:
        for message in await history(http, api_key, session):
            message_id = _id(message["name"])
            seen[message_id] += 1
            contents[message_id] = message.get("content", "")
            complete = message.get("status") in ("MESSAGE_STATUS_COMPLETE", "MESSAGE_STATUS_TRUNCATED")
            if complete and message_id not in by_assistant and message_id not in by_user:
                result.duplicates += 1
                result.problems.append(f"{message['name']} ({message['role']}) is in the history; no client saw it")
    for turn in succeeded.values():
        for name in (turn.user_message, turn.assistant_message):
            if seen[_id(name)] == 0:
                lost.add(turn.key)
                result.problems.append(f"{name} of turn {turn.key} is not in the history")
            elif seen[_id(name)] > 1:
                result.duplicates += seen[_id(name)] - 1
                result.problems.append(f"{name} is {seen[_id(name)]} times in the history")
        if seen[_id(turn.user_message)] and contents[_id(turn.user_message)] != turn.content:
            result.problems.append(f"{turn.user_message} holds another turn's question, not that of {turn.key}")

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        # The ledger: one event per succeeded turn, at the cost the client was told; none other.
        rows = await (
            await db.execute(
                "SELECT event_id, message_id, cost_micros FROM billing.usage_events WHERE tenant_id = %s",
                (tenant_id,),
            )
        ).fetchall()
        result.billed = len(rows)
        billed: Counter[str] = Counter()
        for event_id, message_id, cost in rows:
            billed[message_id] += 1
            turn = by_assistant.get(message_id)
            if turn is None:
                result.duplicates += 1
                result.problems.append(f"usage event {event_id} bills message {message_id}; no client saw it succeed")
            elif int(cost) != turn.cost:
                result.problems.append(f"usage event {event_id} costs {cost}, the client was told {turn.cost}")
        for message_id, turn in by_assistant.items():
            if billed[message_id] == 0:
                lost.add(turn.key)
                result.problems.append(f"turn {turn.key} ({turn.assistant_message}) was never billed")
            elif billed[message_id] > 1:
                result.duplicates += billed[message_id] - 1
                result.problems.append(f"turn {turn.key} was billed {billed[message_id]} times")

        # The idempotency records: a completed one per succeeded turn, nothing else left behind.
        keys = await (
            await db.execute("SELECT key, state FROM conversation.idempotency_keys WHERE tenant_id = %s", (tenant_id,))
        ).fetchall()
        for key, state in keys:
            if key not in succeeded or state != "completed":
                result.orphaned_keys += 1
                result.problems.append(f"idempotency key {key} is left {state}")
        missing = set(succeeded) - {key for key, _ in keys}
        for key in missing:
            result.problems.append(f"the idempotency record of succeeded turn {key} is gone")
        result.orphaned_keys += len(missing)

        undelivered = await (
            await db.execute(
                "SELECT count(*) FROM conversation.usage_outbox WHERE tenant_id = %s AND delivered_time IS NULL",
                (tenant_id,),
            )
        ).fetchone()
        result.undelivered_events = int(undelivered[0]) if undelivered else -1

    result.lost = len(lost)
    result.ledger_turns, result.ledger_cost = await ledger_totals(http, api_key)
    return result
