"""The turn use case: one turn of a session, sent whole or streamed, run once per
idempotency key.

A turn: claim the idempotency key (or replay / refuse), load the pinned agent
version, build the provider request from the system prompt and the history
within the context budget, deliver it (retries, fallback, breaker), then store
the user message, the reply, the usage event (the billing outbox) and the
idempotency record's response in ONE transaction. A failed turn keeps the user
message as failed, bills nothing and frees the key so a retry can run.

What is stored as bytes (the response an idempotent replay returns, the usage event
the outbox carries) is encoded by the functions the server passes in: the protobuf
presenters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import SessionNotFound
from vocalbridge_common.ids import new_id
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.config import TurnSettings
from vocalbridge_conversation.delivery import DeliveryEngine, DeliveryResult, Delta, Done, Restart
from vocalbridge_conversation.domain.idempotency import fingerprint, validate_key
from vocalbridge_conversation.domain.prompt import MAX_HISTORY_MESSAGES, build_prompt
from vocalbridge_conversation.domain.sessions import (
    HISTORY_STATUSES,
    MESSAGE_ID_PREFIX,
    Message,
    MessageStatus,
    Role,
    Session,
    parse_session_name,
)
from vocalbridge_conversation.domain.turns import (
    AgentConfig,
    CompletedTurn,
    ProvidersExhausted,
    TurnEvent,
    TurnRequest,
    VoiceInput,
    fingerprint_fields,
    validate_turn,
)
from vocalbridge_conversation.domain.usage import UsageRecord, turn_usage
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers.base import Completion, CompletionRequest, count_prompt_tokens, count_tokens
from vocalbridge_conversation.repository import (
    IdempotencyRepository,
    MessageRepository,
    OutboxRepository,
    SessionRepository,
)
from vocalbridge_conversation.service.idempotency import Replay, claim

log = logging.getLogger(__name__)

# How long a turn may wait on the agents service, when the caller set no shorter deadline.
AGENTS_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class _Running:
    """A turn that holds its key and is about to call a provider."""

    tenant_id: str
    session: Session
    agent: AgentConfig
    request: CompletionRequest
    record_id: str
    user_message_id: str
    user_time: datetime
    content: str
    voice: VoiceInput | None

    @property
    def channel(self) -> Channel:
        return Channel.VOICE if self.voice else Channel.TEXT


class TurnService:
    def __init__(
        self,
        db: Database,
        agents: AgentDirectory,
        engine: DeliveryEngine,
        prices: PriceBook,
        settings: TurnSettings,
        *,
        encode_response: Callable[[CompletedTurn], bytes],
        encode_usage_event: Callable[[UsageRecord], bytes],
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._agents = agents
        self._engine = engine
        self._prices = prices
        self._settings = settings
        self._encode_response = encode_response
        self._encode_usage_event = encode_usage_event
        self._clock = clock
        self._monotonic = monotonic

    async def send_message(self, tenant_id: str, turn: TurnRequest, deadline: float | None) -> CompletedTurn | Replay:
        """The stored turn, or the stored response of the turn this key already ran.
        `deadline` is on the monotonic clock (None: the caller set none)."""
        running = await self._begin(tenant_id, turn, "SendMessage", deadline)
        if isinstance(running, Replay):
            return running
        try:
            result = await self._engine.deliver(
                running.request, running.agent.primary_provider, running.agent.fallback_provider, deadline
            )
        except BaseException:
            await asyncio.shield(self._release(running))
            raise
        if result.completion is None:
            await self._fail(running, result)
        try:
            return await self._store(running, result, result.completion, MessageStatus.COMPLETE)
        except BaseException:
            # Nothing was stored or billed: free the key so a retry runs the turn again.
            await asyncio.shield(self._release(running))
            raise

    async def stream_message(
        self, tenant_id: str, turn: TurnRequest, deadline: float | None
    ) -> AsyncIterator[TurnEvent] | Replay:
        """The events of the turn, or the stored response of the turn this key already ran.

        If the caller goes away mid-stream, the reply generated so far is
        stored as TRUNCATED and billed for what was generated."""
        running = await self._begin(tenant_id, turn, "StreamMessage", deadline)
        if isinstance(running, Replay):
            return running
        return self._stream(running, deadline)

    # -- the steps of a turn ----------------------------------------------------------

    async def _begin(
        self, tenant_id: str, turn: TurnRequest, operation: str, deadline: float | None
    ) -> _Running | Replay:
        """Claims the key: the turn to run, or the stored response to replay."""
        key = validate_key(turn.idempotency_key)
        validate_turn(turn, self._settings.max_content_chars)
        session_id = parse_session_name(turn.session_name)
        request_fingerprint = fingerprint(operation, **fingerprint_fields(session_id, turn))
        now = self._clock()
        async with self._db.tenant_transaction(tenant_id) as tx:
            session = await SessionRepository(tx, tenant_id).get(session_id)
            if session is None:
                raise SessionNotFound(turn.session_name)
            claimed = await claim(
                IdempotencyRepository(tx, tenant_id),
                key,
                request_fingerprint,
                now,
                self._settings.idempotency_lease,
                self._settings.idempotency_ttl,
            )
            if isinstance(claimed, Replay):
                return claimed
            # Read in the same transaction: one round trip less per turn.
            history = await MessageRepository(tx, tenant_id).latest(session.id, HISTORY_STATUSES, MAX_HISTORY_MESSAGES)
        try:
            agent = await self._agents.version(
                tenant_id, session.agent_id, session.agent_version, self._timeout(deadline)
            )
            request = build_prompt(agent, history, turn.content, self._settings.context_budget_tokens)
        except BaseException:
            await asyncio.shield(self._release_key(tenant_id, claimed.record_id))
            raise
        return _Running(
            tenant_id=tenant_id,
            session=session,
            agent=agent,
            request=request,
            record_id=claimed.record_id,
            user_message_id=new_id(MESSAGE_ID_PREFIX),
            user_time=now,
            content=turn.content,
            voice=turn.voice,
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
                    result = event.result
                    if result.completion is None:
                        finished = True
                        await self._fail(running, result)
                    stored = await self._store(running, result, result.completion, MessageStatus.COMPLETE)
                    finished = True
                    yield stored
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                await asyncio.shield(self._store_abandoned(running, "".join(text), provider))
            raise
        finally:
            await events.aclose()

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
        await self._store(running, result, completion, MessageStatus.TRUNCATED)
        log.info("stored a reply truncated by the caller leaving", extra={"session": running.session.id})

    def _user_message(self, running: _Running, status: MessageStatus) -> Message:
        return Message(
            id=running.user_message_id,
            session_id=running.session.id,
            role=Role.USER,
            content=running.content,
            status=status,
            channel=running.channel,
            create_time=running.user_time,
        )

    async def _fail(self, running: _Running, result: DeliveryResult) -> NoReturn:
        """Keeps the user message as failed, bills nothing, frees the key, and raises."""
        async with self._db.tenant_transaction(running.tenant_id) as tx:
            await MessageRepository(tx, running.tenant_id).add(self._user_message(running, MessageStatus.FAILED))
            await SessionRepository(tx, running.tenant_id).touch(running.session.id, self._clock())
            await IdempotencyRepository(tx, running.tenant_id).release(running.record_id)
        raise ProvidersExhausted(result)

    async def _store(
        self, running: _Running, result: DeliveryResult, completion: Completion, status: MessageStatus
    ) -> CompletedTurn:
        """Stores the turn, its usage event and the key's response in one transaction."""
        now = self._clock()
        if status is MessageStatus.COMPLETE and completion.truncated:
            status = MessageStatus.TRUNCATED
        reply = Message(
            id=new_id(MESSAGE_ID_PREFIX),
            session_id=running.session.id,
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
            session_id=running.session.id,
            message_name=reply.name,
            channel=running.channel,
            provider=result.provider,
            model=result.model,
            usage=usage,
            delivery=result,
            event_time=now,
        )
        async with self._db.tenant_transaction(running.tenant_id) as tx:
            await MessageRepository(tx, running.tenant_id).add(turn.user_message, reply)
            await OutboxRepository(tx, running.tenant_id).add(record.event_id, self._encode_usage_event(record), now)
            await SessionRepository(tx, running.tenant_id).touch(running.session.id, now)
            await IdempotencyRepository(tx, running.tenant_id).complete(running.record_id, self._encode_response(turn))
        return turn

    async def _release(self, running: _Running) -> None:
        await self._release_key(running.tenant_id, running.record_id)

    async def _release_key(self, tenant_id: str, record_id: str) -> None:
        async with self._db.tenant_transaction(tenant_id) as tx:
            await IdempotencyRepository(tx, tenant_id).release(record_id)
