"""Conversation use cases: sessions, history, and turns that run once.

A turn: claim the idempotency key (or replay / refuse), load the pinned agent
version, build the provider request from the system prompt and the history
within the context budget, deliver it (retries, fallback, breaker), then store
the user message, the reply, the usage event (the billing outbox) and the
idempotency record's response in ONE transaction. A failed turn keeps the user
message as failed, bills nothing and frees the key so a retry can run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vocalbridge.billing.v1 import usage_event_pb2
from vocalbridge.conversation.v1 import (
    conversation_service_pb2,
    delivery_pb2,
    message_pb2,
    session_pb2,
)
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import FieldViolation, InvalidArgument, NotFound, Unavailable, invalid_fields
from vocalbridge_common.ids import new_id, parse_resource_name
from vocalbridge_common.pagination import PageTokenCodec, clamp_page_size
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.pricing import DEFAULT_SPEECH_PROVIDER, Quantities, charge, select_prices
from vocalbridge_common.protoconv import to_timestamp
from vocalbridge_common.validation import Violations
from vocalbridge_conversation import idempotency
from vocalbridge_conversation.agents_client import AgentConfig, AgentDirectory, AgentNotFound
from vocalbridge_conversation.delivery import DeliveryEngine, DeliveryResult, Delta, Done, Restart
from vocalbridge_conversation.models import MessageRow, OutboxRow, SessionRow
from vocalbridge_conversation.presenters import delivery_to_proto, message_to_proto
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    count_prompt_tokens,
    count_tokens,
)
from vocalbridge_conversation.repository import (
    IdempotencyRepository,
    MessageRepository,
    OutboxRepository,
    SessionRepository,
)

log = logging.getLogger(__name__)

USER = message_pb2.USER
ASSISTANT = message_pb2.ASSISTANT
COMPLETE = message_pb2.MESSAGE_STATUS_COMPLETE
FAILED = message_pb2.MESSAGE_STATUS_FAILED
TRUNCATED = message_pb2.MESSAGE_STATUS_TRUNCATED
TEXT = session_pb2.CHANNEL_TEXT
VOICE = session_pb2.CHANNEL_VOICE
# History read per turn before the token budget trims it.
MAX_HISTORY_MESSAGES = 200


class SessionNotFound(NotFound):
    default_reason = "SESSION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"session {name!r} not found", metadata={"session": name})


class ProvidersExhausted(Unavailable):
    default_reason = "PROVIDERS_EXHAUSTED"


@dataclass(frozen=True)
class TurnSettings:
    context_budget_tokens: int = 4000
    max_content_chars: int = 32_000
    idempotency_lease: timedelta = timedelta(minutes=2)
    idempotency_ttl: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class VoiceInput:
    """The speech side of a spoken turn (set by the voice service)."""

    audio_seconds: float
    speech_provider: str


@dataclass(frozen=True)
class TurnRequest:
    tenant_id: str
    session_name: str
    content: str
    idempotency_key: str | None
    voice: VoiceInput | None = None


@dataclass(frozen=True)
class Page:
    items: list
    next_page_token: str


@dataclass
class _Turn:
    """What a running turn has gathered before it is stored."""

    tenant_id: str
    session: SessionRow
    agent: AgentConfig
    request: CompletionRequest
    record_id: str
    user_message_id: str
    user_time: datetime
    content: str
    voice: VoiceInput | None


class ConversationService:
    def __init__(
        self,
        db: Database,
        agents: AgentDirectory,
        engine: DeliveryEngine,
        prices: PriceBook,
        page_tokens: PageTokenCodec,
        settings: TurnSettings,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._agents = agents
        self._engine = engine
        self._prices = prices
        self._page_tokens = page_tokens
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic

    # -- sessions -------------------------------------------------------------

    async def create_session(self, tenant_id: str, session: session_pb2.Session, timeout: float) -> SessionRow:
        violations = Violations()
        agent_id = None
        if not session.agent:
            violations.add("session.agent", "is required, as `agents/{agent_id}`")
        else:
            agent_id = parse_resource_name(session.agent, "agents", "agt")
        violations.length("session.external_user_id", session.external_user_id, maximum=200)
        if len(session.metadata) > 32:
            violations.add("session.metadata", "at most 32 entries")
        for key, value in session.metadata.items():
            if not 1 <= len(key) <= 64:
                violations.add(f"session.metadata[{key[:64]}]", "keys must be 1 to 64 characters")
            if len(value) > 512:
                violations.add(f"session.metadata[{key[:64]}]", "values must be at most 512 characters")
        if session.channel not in (session_pb2.CHANNEL_UNSPECIFIED, TEXT, VOICE):
            violations.add("session.channel", "must be CHANNEL_TEXT or CHANNEL_VOICE")
        if violations:
            raise invalid_fields(violations)
        if agent_id is None:
            raise AgentNotFound(session.agent)
        agent = await self._agents.current(agent_id, timeout)
        now = self._clock()
        row = SessionRow(
            id=new_id("ses"),
            tenant_id=tenant_id,
            agent_id=agent_id,
            agent_version=agent.version,
            channel=session.channel or TEXT,
            external_user_id=session.external_user_id,
            metadata_json=json.dumps(dict(session.metadata), sort_keys=True),
            create_time=now,
            update_time=now,
        )
        async with self._db.tenant_transaction(tenant_id) as tx:
            await SessionRepository(tx).add(row)
        return row

    async def get_session(self, tenant_id: str, name: str) -> SessionRow:
        session_id = parse_resource_name(name, "sessions", "ses")
        if session_id:
            async with self._db.tenant_transaction(tenant_id) as tx:
                row = await SessionRepository(tx).get(tenant_id, session_id)
            if row is not None:
                return row
        raise SessionNotFound(name)

    async def list_sessions(self, tenant_id: str, agent: str, page_size: int, page_token: str) -> Page:
        agent_id = None
        if agent:
            agent_id = parse_resource_name(agent, "agents", "agt")
            if agent_id is None:
                raise InvalidArgument(
                    "agent must be `agents/{agent_id}`", field_violations=[FieldViolation("agent", "not an agent name")]
                )
        limit = clamp_page_size(page_size)
        query = f"sessions:{tenant_id}:{agent_id or ''}"
        before = self._page_tokens.decode(page_token, query)
        async with self._db.tenant_transaction(tenant_id) as tx:
            rows = await SessionRepository(tx).page(tenant_id, agent_id, before, limit + 1)
        return self._page(rows, limit, query)

    async def list_messages(self, tenant_id: str, parent: str, page_size: int, page_token: str) -> Page:
        limit = clamp_page_size(page_size)
        session = await self.get_session(tenant_id, parent)
        query = f"messages:{tenant_id}:{session.id}"
        after = self._page_tokens.decode(page_token, query)
        position = (datetime.fromisoformat(after[0]), after[1]) if after else None
        async with self._db.tenant_transaction(tenant_id) as tx:
            rows = await MessageRepository(tx).page(tenant_id, session.id, position, limit + 1)
        return self._page(rows, limit, query, lambda row: [row.create_time.isoformat(), row.id])

    def _page(self, rows: list, limit: int, query: str, position=lambda row: row.id) -> Page:
        if len(rows) > limit:
            rows = rows[:limit]
            return Page(rows, self._page_tokens.encode(query, position(rows[-1])))
        return Page(rows, "")

    # -- turns ----------------------------------------------------------------

    def _validate_turn(self, turn: TurnRequest) -> None:
        violations = Violations()
        if not turn.content.strip():
            violations.add("content", "is required and must not be blank")
        elif len(turn.content) > self._settings.max_content_chars:
            violations.add(
                "content", f"must be at most {self._settings.max_content_chars} characters (got {len(turn.content)})"
            )
        if turn.voice is not None and not 0 < turn.voice.audio_seconds <= 3600:
            violations.add("voice.audio_seconds", "must be greater than 0 and at most 3600")
        if violations:
            raise invalid_fields(violations)

    async def _begin(self, turn: TurnRequest, operation: str, deadline: float | None):
        """Claims the key; returns (_Turn, None) to run, or (None, stored response bytes) to replay."""
        key = idempotency.validate_key(turn.idempotency_key)
        self._validate_turn(turn)
        session_id = parse_resource_name(turn.session_name, "sessions", "ses")
        if session_id is None:
            raise SessionNotFound(turn.session_name)
        voice = (
            {"audio_seconds": turn.voice.audio_seconds, "speech_provider": turn.voice.speech_provider}
            if turn.voice
            else None
        )
        request_fingerprint = idempotency.fingerprint(operation, session=session_id, content=turn.content, voice=voice)
        now = self._clock()
        async with self._db.tenant_transaction(turn.tenant_id) as tx:
            session = await SessionRepository(tx).get(turn.tenant_id, session_id)
            if session is None:
                raise SessionNotFound(turn.session_name)
            claim = await idempotency.claim(
                IdempotencyRepository(tx),
                turn.tenant_id,
                key,
                request_fingerprint,
                now,
                self._settings.idempotency_lease,
                self._settings.idempotency_ttl,
            )
            # Read in the same transaction: one round trip less per turn.
            history = (
                []
                if isinstance(claim, idempotency.Replay)
                else await MessageRepository(tx).latest(
                    turn.tenant_id, session.id, (COMPLETE, TRUNCATED), MAX_HISTORY_MESSAGES
                )
            )
        if isinstance(claim, idempotency.Replay):
            return None, claim.response
        try:
            agent = await self._agents.version(
                turn.tenant_id, session.agent_id, session.agent_version, self._timeout(deadline)
            )
            request = self._provider_request(agent, history, turn.content)
        except BaseException:
            await asyncio.shield(self._release(turn.tenant_id, claim.record_id))
            raise
        return (
            _Turn(
                tenant_id=turn.tenant_id,
                session=session,
                agent=agent,
                request=request,
                record_id=claim.record_id,
                user_message_id=new_id("msg"),
                user_time=now,
                content=turn.content,
                voice=turn.voice,
            ),
            None,
        )

    def _timeout(self, deadline: float | None, cap: float = 10.0) -> float:
        if deadline is None:
            return cap
        return max(0.0, min(cap, deadline - self._monotonic()))

    def _provider_request(self, agent: AgentConfig, history: list[MessageRow], content: str) -> CompletionRequest:
        """System prompt + as much recent history as fits the budget + the new message."""
        fixed = [ChatMessage("user", content)]
        if agent.system_prompt:
            fixed.insert(0, ChatMessage("system", agent.system_prompt))
        budget = self._settings.context_budget_tokens - count_prompt_tokens(fixed)
        kept: list[ChatMessage] = []
        for row in reversed(history):  # newest first: the oldest turns are the ones dropped
            cost = count_tokens(row.content)
            if cost > budget:
                break
            budget -= cost
            kept.append(ChatMessage("user" if row.role == USER else "assistant", row.content))
        kept.reverse()
        messages = ([fixed[0]] if agent.system_prompt else []) + kept + [fixed[-1]]
        return CompletionRequest(
            model=agent.model,
            messages=tuple(messages),
            temperature=agent.temperature,
            top_p=agent.top_p,
            max_output_tokens=agent.max_output_tokens,
        )

    async def _release(self, tenant_id: str, record_id: str) -> None:
        async with self._db.tenant_transaction(tenant_id) as tx:
            await IdempotencyRepository(tx).release(tenant_id, record_id)

    async def send_message(
        self, turn: TurnRequest, deadline: float | None
    ) -> tuple[conversation_service_pb2.SendMessageResponse, bool]:
        """The turn's response and whether it is a replay of a stored one."""
        running, stored = await self._begin(turn, "SendMessage", deadline)
        if running is None:
            return conversation_service_pb2.SendMessageResponse.FromString(stored), True
        try:
            result = await self._engine.deliver(
                running.request, running.agent.primary_provider, running.agent.fallback_provider, deadline
            )
        except BaseException:
            await asyncio.shield(self._release(running.tenant_id, running.record_id))
            raise
        if result.completion is None:
            await self._fail(running, result)
        try:
            return await self._store(running, result, result.completion, COMPLETE), False
        except BaseException:
            # Nothing was stored or billed: free the key so a retry runs the turn again.
            await asyncio.shield(self._release(running.tenant_id, running.record_id))
            raise

    async def stream_message(
        self, turn: TurnRequest, deadline: float | None
    ) -> tuple[AsyncIterator[conversation_service_pb2.StreamMessageResponse], bool]:
        """The events of the turn, and whether they replay a stored turn.

        If the caller goes away mid-stream, the reply generated so far is
        stored as TRUNCATED and billed for what was generated."""
        running, stored = await self._begin(turn, "StreamMessage", deadline)
        if running is None:
            return self._replay_events(conversation_service_pb2.SendMessageResponse.FromString(stored)), True
        return self._stream_events(running, deadline), False

    @staticmethod
    async def _replay_events(response) -> AsyncIterator[conversation_service_pb2.StreamMessageResponse]:
        yield conversation_service_pb2.StreamMessageResponse(text_delta=response.assistant_message.content)
        yield conversation_service_pb2.StreamMessageResponse(
            user_message=response.user_message,
            assistant_message=response.assistant_message,
            delivery=response.delivery,
            usage=response.usage,
        )

    async def _stream_events(self, running: _Turn, deadline: float | None):
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
                    yield conversation_service_pb2.StreamMessageResponse(text_delta=event.text)
                elif isinstance(event, Restart):
                    text.clear()
                    yield conversation_service_pb2.StreamMessageResponse(restart=True)
                elif isinstance(event, Done):
                    result = event.result
                    if result.completion is None:
                        finished = True
                        await self._fail(running, result)
                    response = await self._store(running, result, result.completion, COMPLETE)
                    finished = True
                    yield conversation_service_pb2.StreamMessageResponse(
                        user_message=response.user_message,
                        assistant_message=response.assistant_message,
                        delivery=response.delivery,
                        usage=response.usage,
                    )
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                await asyncio.shield(self._store_abandoned(running, "".join(text), provider))
            raise
        finally:
            await events.aclose()

    async def _store_abandoned(self, running: _Turn, partial: str, provider: str) -> None:
        """The caller left mid-stream: keep and bill what `provider` generated, or free the key if nothing was."""
        if not partial:
            await self._release(running.tenant_id, running.record_id)
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
        await self._store(running, result, completion, TRUNCATED)
        log.info("stored a reply truncated by the caller leaving", extra={"session": running.session.id})

    async def _fail(self, running: _Turn, result: DeliveryResult) -> None:
        """Keeps the user message as failed, bills nothing, frees the key, and raises."""
        async with self._db.tenant_transaction(running.tenant_id) as tx:
            await MessageRepository(tx).add(self._user_row(running, FAILED))
            await SessionRepository(tx).touch(running.tenant_id, running.session.id, self._clock())
            await IdempotencyRepository(tx).release(running.tenant_id, running.record_id)
        last = result.final_outcome.name if result.final_outcome else "NONE"
        raise ProvidersExhausted(
            "no provider could answer this turn; the attempts are in the error details",
            metadata={"lastOutcome": last, "attempts": str(len(result.attempts))},
            details=[delivery_to_proto(result)],
        )

    def _user_row(self, running: _Turn, status: int) -> MessageRow:
        return MessageRow(
            id=running.user_message_id,
            tenant_id=running.tenant_id,
            session_id=running.session.id,
            role=USER,
            content=running.content,
            status=status,
            channel=VOICE if running.voice else TEXT,
            create_time=running.user_time,
        )

    async def _store(
        self, running: _Turn, result: DeliveryResult, completion: Completion, status: int
    ) -> conversation_service_pb2.SendMessageResponse:
        now = self._clock()
        channel = VOICE if running.voice else TEXT
        if status == COMPLETE and completion.truncated:
            status = TRUNCATED
        user_row = self._user_row(running, COMPLETE)
        assistant_row = MessageRow(
            id=new_id("msg"),
            tenant_id=running.tenant_id,
            session_id=running.session.id,
            role=ASSISTANT,
            content=completion.text,
            status=status,
            channel=channel,
            create_time=now,
        )
        speech_provider = (running.voice.speech_provider or DEFAULT_SPEECH_PROVIDER) if running.voice else ""
        quantities = Quantities(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            audio_seconds=running.voice.audio_seconds if running.voice else 0,
            tts_characters=len(completion.text) if running.voice else 0,
        )
        rows = await self._prices.rows()
        priced = charge(
            quantities,
            select_prices(rows, result.provider, result.model, speech_provider or DEFAULT_SPEECH_PROVIDER, at=now),
        )
        if priced.unpriced_units:
            log.warning("no price for %s of %s", [u.value for u in priced.unpriced_units], result.provider)
        usage = delivery_pb2.Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cost_micros=priced.cost_micros,
            audio_seconds=float(quantities.audio_seconds),
            tts_characters=quantities.tts_characters,
        )
        delivery = delivery_to_proto(result)
        response = conversation_service_pb2.SendMessageResponse(
            user_message=message_to_proto(user_row),
            assistant_message=message_to_proto(assistant_row),
            delivery=delivery,
            usage=usage,
        )
        event_id = new_id("use")
        event = usage_event_pb2.UsageEvent(
            name=f"usageEvents/{event_id}",
            tenant=f"tenants/{running.tenant_id}",
            agent=f"agents/{running.agent.agent_id}",
            agent_version=running.agent.version,
            session=f"sessions/{running.session.id}",
            message=response.assistant_message.name,
            channel=channel,
            provider=result.provider,
            model=result.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            audio_seconds=float(quantities.audio_seconds),
            tts_characters=quantities.tts_characters,
            cost_micros=priced.cost_micros,
            prices=[price_to_proto(row) for row in priced.prices_used],
            event_time=to_timestamp(now),
            delivery=delivery,
        )
        async with self._db.tenant_transaction(running.tenant_id) as tx:
            await MessageRepository(tx).add(user_row, assistant_row)
            await OutboxRepository(tx).add(
                OutboxRow(
                    event_id=event_id,
                    tenant_id=running.tenant_id,
                    payload=event.SerializeToString(),
                    create_time=now,
                    delivered_time=None,
                    attempts=0,
                )
            )
            await SessionRepository(tx).touch(running.tenant_id, running.session.id, now)
            await IdempotencyRepository(tx).complete(running.tenant_id, running.record_id, response.SerializeToString())
        return response
