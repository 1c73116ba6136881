"""The turn use case: one turn of a session, sent whole or streamed, run once per
idempotency key.

A turn: claim the idempotency key (or replay / refuse), load the pinned agent
version, build the provider request from the system prompt and the history
within the context budget, deliver it (retries, fallback, breaker), then store
the user message, the reply, the usage event (the billing outbox) and the
idempotency record's response in ONE transaction. A failed turn keeps the user
message as failed, bills nothing and frees the key so a retry can run.

Two transactions per turn, each one statement on PostgreSQL (repository.PgTurns):
opening the turn reads the session, claims the key and reads the history the turn
does not hold yet (HistoryCache); storing it completes the key, numbers and inserts the
messages and queues the usage event. The store happens only while this request still
holds its key: if its lease ran out and a retry took the key over, nothing is stored or
billed for it (the retry's turn is), and the caller gets IDEMPOTENCY_KEY_IN_USE.

What is stored as bytes (the response an idempotent replay returns, the usage event
the outbox carries) is encoded by the functions the server passes in: the protobuf
presenters.

A completion of the OpenAI-compatible API runs through the same steps. In a session it is
a turn like SendMessage's (with its own parameters and its own response encoding). Outside
any session (`complete`, `stream_complete`) the conversation is the caller's: the
idempotency key is optional (claimed by the common rules when sent), the agent's current
version answers, and storing it writes nothing but the usage event (and the key's response)
in one transaction; a failure frees the key and bills nothing, as a turn's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn, Protocol

from vocalbridge_common import metrics
from vocalbridge_common.db import utcnow
from vocalbridge_common.errors import FieldViolation, InvalidArgument, SessionNotFound
from vocalbridge_common.idempotency import (
    ClaimLost,
    IdempotencyRecord,
    IdempotencyStore,
    Replay,
    claim,
    fingerprint,
    new_claim,
    required_key,
    validate_key,
)
from vocalbridge_common.ids import new_id
from vocalbridge_common.limits.limiter import TurnTicket
from vocalbridge_common.telemetry import remember_trace
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.config import TurnSettings
from vocalbridge_conversation.delivery import DeliveryEngine, DeliveryResult, Delta, Done, Restart
from vocalbridge_conversation.domain.history import MAX_HISTORY_MESSAGES, HistoryMessage, OpenedTurn
from vocalbridge_conversation.domain.prompt import apply_overrides, build_prompt, completion_prompt
from vocalbridge_conversation.domain.sessions import (
    HISTORY_STATUSES,
    MESSAGE_ID_PREFIX,
    Message,
    MessageStatus,
    Role,
    SessionState,
    parse_session_name,
)
from vocalbridge_conversation.domain.turns import (
    AgentConfig,
    CompletedTurn,
    CompletionTurn,
    Playback,
    ProvidersExhausted,
    ReplyGenerated,
    TurnEvent,
    TurnRequest,
    VoiceInput,
    VoiceTurnEvent,
    fingerprint_fields,
    heard_reply,
    validate_turn,
)
from vocalbridge_conversation.domain.usage import OutboxEntry, UsageRecord, turn_usage
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers.base import Completion, CompletionRequest, count_prompt_tokens, count_tokens
from vocalbridge_conversation.service.history import HistoryCache
from vocalbridge_conversation.service.limits import TurnLimits

log = logging.getLogger(__name__)

# Turns that ran (replays are not counted again): outcome "complete", "truncated" or "failed"
# (no provider answered; provider is then the last one tried), by channel.
TURNS = metrics.counter("turns", "Turns by channel, outcome and provider.", ("channel", "outcome", "provider"))

# The operation a spoken turn's idempotency fingerprint names: that of the SendMessage calls
# spoken turns were before StreamVoiceTurn, so a Converse retried across the upgrade replays.
VOICE_TURN_OPERATION = "SendMessage"
# How long a turn may wait on the agents service, when the caller set no shorter deadline.
AGENTS_TIMEOUT_SECONDS = 10.0
# The operation a completion outside any session names in its idempotency fingerprint.
COMPLETION_OPERATION = "CreateChatCompletion"

# What a turn stores as its response for replays (and returns): the encoding of its API.
Encoder = Callable[[CompletedTurn], bytes]


class TurnTransaction(IdempotencyStore, Protocol):
    """A tenant's turns inside one transaction (repository.PgTurns / repository.SqlTurns)."""

    async def open_turn(
        self, session_id: str, claim: IdempotencyRecord, after_seq: int, limit: int
    ) -> OpenedTurn | None:
        """The session (None: the tenant has no such session, and nothing was written); the
        claim, made by inserting `claim` unless its key is held already (then nothing was
        written); and when it was made, the session's newest `limit` history messages
        numbered above `after_seq`."""

    async def read_history(self, session_id: str, after_seq: int, limit: int) -> OpenedTurn | None:
        """The session and its newest `limit` history messages numbered above `after_seq`."""

    async def store_turn(
        self, record_id: str, response: bytes, messages: Sequence[Message], event: OutboxEntry | None, when: datetime
    ) -> int | None:
        """If claim `record_id` still holds its key unfinished: completes it with `response`,
        stores `messages` numbered after the session's newest and queues `event`; returns the
        session's new last number. None, writing nothing, when the claim was lost."""

    async def fail_turn(self, record_id: str, message: Message, when: datetime) -> int | None:
        """If claim `record_id` still holds its key unfinished: frees it and stores `message`
        (the failed user message); the session's new last number. None when the claim was lost."""

    async def store_completion(self, record_id: str | None, response: bytes, event: OutboxEntry) -> bool:
        """A completion outside any session: queues `event` and, with a claim, completes it with
        `response`, only if claim `record_id` still holds its key unfinished (else writes
        nothing and returns False). Without a claim (None) it only queues the event."""


class TurnStore(Protocol):
    """Where turns are kept: one transaction of a tenant's turns at a time."""

    def transaction(self, tenant_id: str) -> AbstractAsyncContextManager[TurnTransaction]: ...


@dataclass(frozen=True)
class _Running:
    """A turn that holds its key (if it has one) and is about to call a provider."""

    tenant_id: str
    # None: a completion outside any session (nothing stored but its usage).
    session: SessionState | None
    agent: AgentConfig
    request: CompletionRequest
    # None: a completion sent without an Idempotency-Key (no claim to complete or free).
    key: str | None
    record_id: str | None
    user_message_id: str
    user_time: datetime
    content: str
    voice: VoiceInput | None
    # How the turn's response is stored and returned (its API's encoding).
    encode: Encoder
    # What the turn holds in its tenant's limits (its budget reservation), if any apply.
    ticket: TurnTicket | None = None

    @property
    def channel(self) -> Channel:
        return Channel.VOICE if self.voice else Channel.TEXT


class TurnService:
    def __init__(
        self,
        store: TurnStore,
        agents: AgentDirectory,
        engine: DeliveryEngine,
        prices: PriceBook,
        settings: TurnSettings,
        *,
        encode_response: Callable[[CompletedTurn], bytes],
        encode_usage_event: Callable[[UsageRecord], bytes],
        history: HistoryCache | None = None,
        limits: TurnLimits | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._turns = store
        self._agents = agents
        self._engine = engine
        self._prices = prices
        self._settings = settings
        self._encode_response = encode_response
        self._encode_usage_event = encode_usage_event
        self._history = history or HistoryCache(settings.history_cache_sessions, settings.context_budget_tokens)
        self._limits = limits
        self._clock = clock
        self._monotonic = monotonic

    async def send_message(
        self,
        tenant_id: str,
        turn: TurnRequest,
        deadline: float | None,
        *,
        operation: str = "SendMessage",
        encode: Encoder | None = None,
    ) -> CompletedTurn | Replay:
        """The stored turn, or the stored response of the turn this key already ran.
        `deadline` is on the monotonic clock (None: the caller set none). `operation` names
        the request in the key's fingerprint, `encode` the response stored for replays (the
        default: SendMessage's)."""
        running = await self._begin(tenant_id, turn, operation, deadline, encode)
        if isinstance(running, Replay):
            return running
        return await self._run(running, deadline)

    async def complete(
        self, tenant_id: str, turn: CompletionTurn, deadline: float | None, encode: Encoder
    ) -> CompletedTurn | Replay:
        """A completion outside any session, whole: its result (usage queued for billing), or
        the stored response of the completion its idempotency key already ran."""
        running = await self._begin_completion(tenant_id, turn, deadline, encode)
        if isinstance(running, Replay):
            return running
        return await self._run(running, deadline)

    async def stream_complete(
        self, tenant_id: str, turn: CompletionTurn, deadline: float | None, encode: Encoder
    ) -> AsyncGenerator[TurnEvent, None] | Replay:
        """A completion outside any session, streamed as a turn is (stream_message): if the
        caller goes away mid-stream, what was generated is billed."""
        running = await self._begin_completion(tenant_id, turn, deadline, encode)
        if isinstance(running, Replay):
            return running
        return self._stream(running, deadline)

    async def _run(self, running: _Running, deadline: float | None) -> CompletedTurn:
        """Delivers a turn whole, then stores it (or fails it)."""
        try:
            result = await self._engine.deliver(
                running.request, running.agent.primary_provider, running.agent.fallback_provider, deadline
            )
        except BaseException:
            await asyncio.shield(self._release(running))
            raise
        if result.completion is None:
            await self._fail(running, result)
        return await self._store_or_release(running, result, result.completion, MessageStatus.COMPLETE)

    async def stream_message(
        self,
        tenant_id: str,
        turn: TurnRequest,
        deadline: float | None,
        *,
        operation: str = "StreamMessage",
        encode: Encoder | None = None,
    ) -> AsyncGenerator[TurnEvent, None] | Replay:
        """The events of the turn, or the stored response of the turn this key already ran.

        If the caller goes away mid-stream, the reply generated so far is
        stored as TRUNCATED and billed for what was generated."""
        running = await self._begin(tenant_id, turn, operation, deadline, encode)
        if isinstance(running, Replay):
            return running
        return self._stream(running, deadline)

    async def voice_turn(
        self,
        tenant_id: str,
        turn: TurnRequest,
        deadline: float | None,
        playback: Callable[[], Awaitable[Playback]],
    ) -> AsyncIterator[VoiceTurnEvent] | Replay:
        """A spoken turn (the voice service's): the events of its reply, then the turn stored as
        the caller heard it, which `playback` tells (awaited once the reply streams: the whole
        reply, or the characters spoken before a barge-in, even mid-generation). Or the stored
        response of the turn this key already ran."""
        running = await self._begin(tenant_id, turn, VOICE_TURN_OPERATION, deadline)
        if isinstance(running, Replay):
            return running
        return self._voice_stream(running, deadline, playback)

    # -- the steps of a turn ----------------------------------------------------------

    async def _begin(
        self, tenant_id: str, turn: TurnRequest, operation: str, deadline: float | None, encode: Encoder | None = None
    ) -> _Running | Replay:
        """Claims the key: the turn to run, or the stored response to replay."""
        key = required_key(turn.idempotency_key)
        validate_turn(turn, self._settings.max_content_chars)
        session_id = parse_session_name(turn.session_name)
        request_fingerprint = fingerprint(operation, **fingerprint_fields(session_id, turn))
        now = self._clock()
        settings = self._settings
        record = new_claim(key, request_fingerprint, now, settings.idempotency_lease, settings.idempotency_ttl)
        known = self._history.window(session_id)
        async with self._turns.transaction(tenant_id) as turns:
            opened = await turns.open_turn(session_id, record, known.last_seq, MAX_HISTORY_MESSAGES)
        if opened is None:
            raise SessionNotFound(turn.session_name)
        record_id = record.id
        if not opened.claimed:
            # The key is held: replay, refuse, or take over an abandoned claim (the rules of
            # vocalbridge_common.idempotency, in a transaction of their own).
            async with self._turns.transaction(tenant_id) as turns:
                claimed = await claim(
                    turns, key, request_fingerprint, now, settings.idempotency_lease, settings.idempotency_ttl
                )
                if isinstance(claimed, Replay):
                    return claimed
                opened = await turns.read_history(session_id, known.last_seq, MAX_HISTORY_MESSAGES)
            if opened is None:  # pragma: no cover - the session was there a moment ago and is never deleted
                raise SessionNotFound(turn.session_name)
            record_id = claimed.record_id
        history = self._history.merge(session_id, known, opened.session.last_seq, opened.history)
        try:
            if turn.agent_id is not None and turn.agent_id != opened.session.agent_id:
                raise InvalidArgument(
                    f"session {turn.session_name} belongs to agent agents/{opened.session.agent_id}",
                    reason="SESSION_AGENT_MISMATCH",
                    field_violations=[FieldViolation("model", "must be the agent of the session")],
                )
            agent = await self._agents.version(
                tenant_id, opened.session.agent_id, opened.session.agent_version, self._timeout(deadline)
            )
            request = build_prompt(agent, history, turn.content, settings.context_budget_tokens)
            request = apply_overrides(request, agent, turn.overrides)
            ticket = None
            if self._limits is not None:
                # Before any provider call: a turn refused here bills nothing and frees its key.
                request, ticket = await self._limits.start(tenant_id, agent, request, turn.voice)
        except BaseException:
            await asyncio.shield(self._release_key(tenant_id, record_id))
            raise
        return _Running(
            tenant_id=tenant_id,
            session=opened.session,
            agent=agent,
            request=request,
            key=key,
            record_id=record_id,
            user_message_id=new_id(MESSAGE_ID_PREFIX),
            user_time=now,
            content=turn.content,
            voice=turn.voice,
            encode=encode or self._encode_response,
            ticket=ticket,
        )

    async def _begin_completion(
        self, tenant_id: str, turn: CompletionTurn, deadline: float | None, encode: Encoder
    ) -> _Running | Replay:
        """Claims the key when there is one (the common rules: run, replay or refuse), then
        reads the agent and reserves the limits; nothing is read or written without a key."""
        key = validate_key(turn.idempotency_key, required=False)
        now = self._clock()
        record_id = None
        if key is not None:
            settings = self._settings
            request_fingerprint = fingerprint(COMPLETION_OPERATION, **turn.fingerprint_fields())
            async with self._turns.transaction(tenant_id) as turns:
                claimed = await claim(
                    turns, key, request_fingerprint, now, settings.idempotency_lease, settings.idempotency_ttl
                )
            if isinstance(claimed, Replay):
                return claimed
            record_id = claimed.record_id
        try:
            agent = await self._agents.recent(tenant_id, turn.agent_id, self._timeout(deadline))
            request = apply_overrides(completion_prompt(agent, turn.messages), agent, turn.overrides)
            ticket = None
            if self._limits is not None:
                # Before any provider call: a completion refused here bills nothing and frees its key.
                request, ticket = await self._limits.start(tenant_id, agent, request, None)
        except BaseException:
            await asyncio.shield(self._release_key(tenant_id, record_id))
            raise
        return _Running(
            tenant_id=tenant_id,
            session=None,
            agent=agent,
            request=request,
            key=key,
            record_id=record_id,
            user_message_id=new_id(MESSAGE_ID_PREFIX),
            user_time=now,
            content="",
            voice=None,
            encode=encode,
            ticket=ticket,
        )

    def _timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return AGENTS_TIMEOUT_SECONDS
        return max(0.0, min(AGENTS_TIMEOUT_SECONDS, deadline - self._monotonic()))

    async def _stream(self, running: _Running, deadline: float | None) -> AsyncGenerator[TurnEvent, None]:
        text: list[str] = []
        provider = running.agent.primary_provider
        finished = False
        events = self._engine.deliver_stream(
            running.request, running.agent.primary_provider, running.agent.fallback_provider, deadline
        )
        try:
            async for event in events:
                if isinstance(event, Delta):
                    text.append(event.text)
                    provider = event.provider or provider
                    yield event
                elif isinstance(event, Restart):
                    text.clear()
                    yield event
                elif isinstance(event, Done):
                    # From here on the turn is stored, failed or released, never abandoned.
                    finished = True
                    result = event.result
                    if result.completion is None:
                        await self._fail(running, result)
                    yield await self._store_or_release(running, result, result.completion, MessageStatus.COMPLETE)
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                await asyncio.shield(self._store_abandoned(running, "".join(text), provider))
            raise
        finally:
            await events.aclose()

    async def _voice_stream(
        self, running: _Running, deadline: float | None, playback: Callable[[], Awaitable[Playback]]
    ) -> AsyncGenerator[VoiceTurnEvent, None]:
        """The reply streams while the caller listens; the turn is stored once the caller's
        playback is known, cut at what was heard. A barge-in while the reply is still produced
        stops the provider there."""
        text: list[str] = []
        restarts = 0
        provider = running.agent.primary_provider
        result: DeliveryResult | None = None
        finished = False
        heard = asyncio.ensure_future(playback())
        events = self._engine.deliver_stream(
            running.request, running.agent.primary_provider, running.agent.fallback_provider, deadline
        )
        try:
            while not heard.done():
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait((step, heard), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # the caller spoke over the reply: stop producing it
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    break
                event = step.result()
                if isinstance(event, Delta):
                    text.append(event.text)
                    provider = event.provider or provider
                    yield event
                elif isinstance(event, Restart):
                    text.clear()
                    restarts += 1
                    yield event
                elif isinstance(event, Done):
                    result = event.result
                    if result.completion is None:
                        finished = True  # failed: the user message kept, nothing billed, the key freed
                        await self._fail(running, result)
                    yield ReplyGenerated(len("".join(text)))
                    break
            played = await heard
            reply = "".join(text)
            kept = heard_reply(reply, restarts, played, generated=result is not None)
            # From here on the turn is stored or released, never abandoned.
            finished = True
            if kept is None and result is not None and result.completion is not None:
                yield await self._store_or_release(running, result, result.completion, MessageStatus.COMPLETE)
                return
            cut = self._cut(running, result, kept or "", provider)
            assert cut.completion is not None
            yield await self._store_or_release(running, cut, cut.completion, MessageStatus.TRUNCATED)
        except BaseException:
            if not finished:
                await asyncio.shield(self._store_abandoned(running, "".join(text), provider))
            raise
        finally:
            heard.cancel()
            await events.aclose()

    def _cut(self, running: _Running, result: DeliveryResult | None, kept: str, provider: str) -> DeliveryResult:
        """The delivery of a reply cut at `kept`: its completion tokens are those of the text
        kept; its prompt tokens the provider's count when it finished, else the gateway's."""
        prompt_tokens = (
            result.completion.prompt_tokens
            if result is not None and result.completion is not None
            else count_prompt_tokens(running.request.messages)
        )
        completion = Completion(
            text=kept,
            prompt_tokens=prompt_tokens,
            completion_tokens=count_tokens(kept),
            model=result.model if result is not None else running.agent.model,
            truncated=True,
        )
        if result is not None:
            return replace(result, completion=completion)
        return DeliveryResult(
            completion=completion,
            provider=provider,
            model=running.agent.model,
            fallback_used=provider != running.agent.primary_provider,
            attempts=(),
            latency=0.0,
        )

    async def _store_abandoned(self, running: _Running, partial: str, provider: str) -> None:
        """The caller left mid-stream: keep and bill what `provider` generated, or free the key if nothing was."""
        if not partial:
            await self._release(running)
            return
        completion = Completion(
            text=partial,
            prompt_tokens=count_prompt_tokens(running.request.messages),
            completion_tokens=count_tokens(partial),
            model=running.agent.model,
            truncated=True,
        )
        result = DeliveryResult(
            completion=completion,
            provider=provider,
            model=running.agent.model,
            fallback_used=provider != running.agent.primary_provider,
            attempts=(),
            latency=0.0,
        )
        try:
            await self._store(running, result, completion, MessageStatus.TRUNCATED)
        except ClaimLost:
            return  # the retry that took the key over stores its own turn
        session = running.session.id if running.session else None
        log.info("stored a reply truncated by the caller leaving", extra={"session": session})

    def _user_message(self, running: _Running, status: MessageStatus) -> Message:
        return Message(
            id=running.user_message_id,
            session_id=running.session.id if running.session else "",
            role=Role.USER,
            content=running.content,
            status=status,
            channel=running.channel,
            create_time=running.user_time,
        )

    async def _fail(self, running: _Running, result: DeliveryResult) -> NoReturn:
        """Keeps the user message as failed, bills nothing, frees the key, and raises. A request
        whose claim was taken over stores nothing: the retry that holds the key keeps the turn."""
        if running.session is None:
            # A completion outside any session keeps no message: it only frees its key.
            await self._release_key(running.tenant_id, running.record_id)
        else:
            assert running.record_id is not None  # a turn in a session always holds its key
            async with self._turns.transaction(running.tenant_id) as turns:
                last_seq = await turns.fail_turn(
                    running.record_id, self._user_message(running, MessageStatus.FAILED), self._clock()
                )
            if last_seq is not None:
                self._history.extend(running.session.id, last_seq, 1, ())
        tried = result.attempts[-1].provider if result.attempts else running.agent.primary_provider
        TURNS.labels(running.channel.name.lower(), "failed", tried).inc()
        await self._release_limits(running)
        raise ProvidersExhausted(result)

    async def _store_or_release(
        self, running: _Running, result: DeliveryResult, completion: Completion, status: MessageStatus
    ) -> CompletedTurn:
        """Stores the turn; if storing fails, nothing was stored or billed, and the key is freed
        so a retry runs the turn again (unless the key belongs to a retry already)."""
        try:
            return await self._store(running, result, completion, status)
        except ClaimLost:
            raise
        except BaseException:
            await asyncio.shield(self._release(running))
            raise

    async def _store(
        self, running: _Running, result: DeliveryResult, completion: Completion, status: MessageStatus
    ) -> CompletedTurn:
        """Stores the turn, its usage event and the key's response in one transaction, if this
        request still holds its key; raises ClaimLost, having stored nothing, if it does not."""
        now = self._clock()
        if status is MessageStatus.COMPLETE and completion.truncated:
            status = MessageStatus.TRUNCATED
        session = running.session
        reply = Message(
            id=new_id(MESSAGE_ID_PREFIX),
            session_id=session.id if session else "",
            role=Role.ASSISTANT,
            content=completion.text,
            status=status,
            channel=running.channel,
            create_time=now,
        )
        voice = running.voice
        usage = turn_usage(
            completion,
            provider=result.provider,
            model=result.model,
            prices=self._prices.rows(),
            at=now,
            audio_seconds=voice.audio_seconds if voice else None,
            speech_provider=voice.speech_provider if voice else "",
        )
        if usage.charge.unpriced_units:
            log.warning("no price for %s of %s", [u.value for u in usage.charge.unpriced_units], result.provider)
        turn = CompletedTurn(self._user_message(running, MessageStatus.COMPLETE), reply, result, usage)
        record = UsageRecord(
            event_id=new_id("use"),
            tenant_id=running.tenant_id,
            agent_id=running.agent.agent_id,
            agent_version=running.agent.version,
            session_id=session.id if session else "",
            message_name=reply.name if session else "",
            channel=running.channel,
            provider=result.provider,
            model=result.model,
            usage=usage,
            delivery=result,
            event_time=now,
        )
        event = OutboxEntry(record.event_id, self._encode_usage_event(record), now)
        remember_trace(record.event_id)  # the relay's batch continues this turn's trace
        messages = (turn.user_message, reply)
        turn = replace(turn, stored_response=running.encode(turn))
        last_seq = None
        async with self._turns.transaction(running.tenant_id) as turns:
            if session is None:
                stored = await turns.store_completion(running.record_id, turn.stored_response, event)
            else:
                assert running.record_id is not None  # a turn in a session always holds its key
                last_seq = await turns.store_turn(running.record_id, turn.stored_response, messages, event, now)
                stored = last_seq is not None
        if not stored:
            await self._release_limits(running)
            raise ClaimLost(running.key or "")
        if self._limits is not None:
            await self._limits.finish(running.ticket, usage)
        TURNS.labels(running.channel.name.lower(), status.name.lower(), result.provider).inc()
        if session is None or last_seq is None:
            return turn
        self._history.extend(
            session.id,
            last_seq,
            len(messages),
            [
                HistoryMessage.of(last_seq - len(messages) + 1 + offset, message.role, message.content)
                for offset, message in enumerate(messages)
                if message.status in HISTORY_STATUSES
            ],
        )
        return turn

    async def _release(self, running: _Running) -> None:
        await self._release_key(running.tenant_id, running.record_id)
        await self._release_limits(running)

    async def _release_limits(self, running: _Running) -> None:
        if self._limits is not None:
            await self._limits.release(running.ticket)

    async def _release_key(self, tenant_id: str, record_id: str | None) -> None:
        if record_id is None:
            return
        async with self._turns.transaction(tenant_id) as turns:
            await turns.release(record_id)
