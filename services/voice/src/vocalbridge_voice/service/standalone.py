"""Transcribe and Synthesize: the engines on their own, outside any session, billed as usage.

Each request writes one usage event to the outbox (the relay delivers it to billing), in
the transaction that records its response. With an Idempotency-Key the request runs and
bills once: the (tenant, key) primary key decides which of two concurrent requests wins,
the other returns the winner's response; a repeat gets the stored response without
running an engine; the same key with another request is refused. The engines have no side
effects, so the work is done before the claim, and nothing needs releasing on failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import AlreadyExists, invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pricing import SEED_PRICES, PriceRow
from vocalbridge_common.validation import Violations
from vocalbridge_voice.domain.audio import AudioLimits, Pcm, parse_wav
from vocalbridge_voice.domain.text import validate_synthesis_text
from vocalbridge_voice.domain.turns import validate_idempotency_key
from vocalbridge_voice.domain.usage import SpeechUsage, fingerprint, speech_usage
from vocalbridge_voice.repository import SpeechRequestRepository, UsageOutboxRepository
from vocalbridge_voice.service.speech import Capacity, Speech

IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Replay:
    """The stored response of the request this key already ran."""

    response: bytes


@dataclass(frozen=True)
class Transcription:
    transcript: str
    audio_seconds: float
    usage: SpeechUsage


@dataclass(frozen=True)
class Synthesis:
    audio: Pcm
    usage: SpeechUsage


@dataclass(frozen=True)
class Encoders:
    """How responses and usage events become bytes (the protobuf presenters)."""

    transcription: Callable[[Transcription], bytes]
    synthesis: Callable[[Synthesis], bytes]
    usage_event: Callable[[SpeechUsage], bytes]


class StandaloneService:
    def __init__(
        self,
        db: Database,
        speech: Speech,
        capacity: Capacity,
        limits: AudioLimits,
        encoders: Encoders,
        *,
        prices: Sequence[PriceRow] = SEED_PRICES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._speech = speech
        self._capacity = capacity
        self._limits = limits
        self._encoders = encoders
        self._prices = prices
        self._clock = clock

    async def transcribe(self, tenant_id: str, audio: bytes, idempotency_key: str | None) -> Transcription | Replay:
        key = validate_idempotency_key(idempotency_key, required=False)
        pcm = parse_wav(audio, self._limits)
        digest = fingerprint("Transcribe", audio=hashlib.sha256(audio).hexdigest())
        if key and (stored := await self._stored(tenant_id, key, digest)):
            return stored
        async with self._capacity.slot():
            transcript = await self._speech.transcribe(pcm)
        result = Transcription(
            transcript.text,
            pcm.seconds,
            self._usage(tenant_id, self._speech.stt_engine, audio_seconds=pcm.seconds),
        )
        return await self._record(tenant_id, key, digest, self._encoders.transcription(result), result.usage) or result

    async def synthesize(
        self, tenant_id: str, text: str, voice: str, words_per_minute: int, idempotency_key: str | None
    ) -> Synthesis | Replay:
        key = validate_idempotency_key(idempotency_key, required=False)
        violations = Violations()
        validate_synthesis_text(text, violations)
        violations.extend(self._speech.catalogue.problems(voice, words_per_minute))
        if violations:
            raise invalid_fields(violations)
        choice = self._speech.catalogue.resolve(voice, words_per_minute)
        digest = fingerprint("Synthesize", text=text, voice=choice.qualified_name, wpm=choice.words_per_minute)
        if key and (stored := await self._stored(tenant_id, key, digest)):
            return stored
        async with self._capacity.slot():
            audio = await self._speech.synthesize(choice, text)
        result = Synthesis(audio, self._usage(tenant_id, choice.engine, characters=len(text)))
        return await self._record(tenant_id, key, digest, self._encoders.synthesis(result), result.usage) or result

    def _usage(self, tenant_id: str, engine: str, *, audio_seconds: float = 0.0, characters: int = 0) -> SpeechUsage:
        return speech_usage(
            event_id=new_id("vus"),
            tenant_id=tenant_id,
            speech_provider=self._speech.speech_provider,
            engine=engine,
            audio_seconds=audio_seconds,
            characters=characters,
            prices=self._prices,
            at=self._clock(),
        )

    async def _stored(self, tenant_id: str, key: str, digest: str) -> Replay | None:
        async with self._db.tenant_transaction(tenant_id) as tx:
            stored = await SpeechRequestRepository(tx, tenant_id).get(key)
        if stored is None or stored.expire_time <= self._clock():
            return None
        return self._replay_or_refuse(key, digest, stored.fingerprint, stored.response)

    @staticmethod
    def _replay_or_refuse(key: str, digest: str, stored_digest: str, response: bytes) -> Replay:
        if stored_digest != digest:
            raise AlreadyExists(
                "this Idempotency-Key was already used with a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"idempotencyKey": key},
            )
        return Replay(response)

    async def _record(
        self, tenant_id: str, key: str | None, digest: str, response: bytes, usage: SpeechUsage
    ) -> Replay | None:
        """Stores the response (under the key) and its usage event in one transaction; the
        stored response instead when another request with the key got there first."""
        now = self._clock()
        async with self._db.tenant_transaction(tenant_id) as tx:
            if key:
                requests = SpeechRequestRepository(tx, tenant_id)
                await requests.forget_expired(key, now)
                if not await requests.add_if_absent(key, digest, response, now, now + IDEMPOTENCY_TTL):
                    winner = await requests.get(key)
                    if winner is not None:
                        return self._replay_or_refuse(key, digest, winner.fingerprint, winner.response)
            await UsageOutboxRepository(tx, tenant_id).add(usage.event_id, self._encoders.usage_event(usage), now)
        return None
