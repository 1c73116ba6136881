"""Transcribe and Synthesize: the engines on their own, outside any session, billed as usage.

Each request writes one usage event to the outbox (the relay delivers it to billing), in
the transaction that records its response. With an Idempotency-Key the request runs and
bills once, by the same rules as a turn (vocalbridge_common.idempotency): the request
claims its key before any engine runs; a repeat gets the stored response without running an
engine; the same key with another request is refused (IDEMPOTENCY_KEY_REUSED); a repeat
while the first runs is told the key is in use (IDEMPOTENCY_KEY_IN_USE); a claim whose
worker died is taken over after its lease; a request that fails frees its key.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.idempotency import ClaimLost, IdempotencySettings, Replay, claim, fingerprint, validate_key
from vocalbridge_common.ids import new_id
from vocalbridge_common.pricing import SEED_PRICES, PriceRow
from vocalbridge_common.validation import Violations
from vocalbridge_voice.domain.audio import AudioLimits, Pcm, parse_wav
from vocalbridge_voice.domain.text import validate_synthesis_text
from vocalbridge_voice.domain.usage import SpeechUsage, speech_usage
from vocalbridge_voice.repository import IdempotencyRepository, UsageOutboxRepository
from vocalbridge_voice.service.budget import SpeechBudget
from vocalbridge_voice.service.speech import Capacity, Speech

__all__ = ["Encoders", "Replay", "StandaloneService", "Synthesis", "Transcription"]

Result = TypeVar("Result", "Transcription", "Synthesis")


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
        keys: IdempotencySettings | None = None,
        prices: Sequence[PriceRow] = SEED_PRICES,
        clock: Callable[[], datetime] = utcnow,
        budget: SpeechBudget | None = None,
    ) -> None:
        self._db = db
        self._speech = speech
        self._capacity = capacity
        self._limits = limits
        self._encoders = encoders
        self._keys = keys or IdempotencySettings()
        self._prices = prices
        self._clock = clock
        self._budget = budget or SpeechBudget.unlimited()

    async def transcribe(self, tenant_id: str, audio: bytes, idempotency_key: str | None) -> Transcription | Replay:
        key = validate_key(idempotency_key, required=False)
        pcm = parse_wav(audio, self._limits)
        digest = fingerprint("Transcribe", audio=hashlib.sha256(audio).hexdigest())

        async def run() -> Transcription:
            async with self._budget.hold(tenant_id, audio_seconds=pcm.seconds), self._capacity.slot():
                transcript = await self._speech.transcribe(pcm)
            usage = self._usage(tenant_id, self._speech.stt_engine, audio_seconds=pcm.seconds)
            return Transcription(transcript.text, pcm.seconds, usage)

        return await self._once(tenant_id, key, digest, run, self._encoders.transcription)

    async def synthesize(
        self, tenant_id: str, text: str, voice: str, words_per_minute: int, idempotency_key: str | None
    ) -> Synthesis | Replay:
        key = validate_key(idempotency_key, required=False)
        violations = Violations()
        validate_synthesis_text(text, violations)
        violations.extend(self._speech.catalogue.problems(voice, words_per_minute))
        if violations:
            raise invalid_fields(violations)
        choice = self._speech.catalogue.resolve(voice, words_per_minute)
        digest = fingerprint("Synthesize", text=text, voice=choice.qualified_name, wpm=choice.words_per_minute)

        async def run() -> Synthesis:
            async with self._budget.hold(tenant_id, characters=len(text)), self._capacity.slot():
                audio = await self._speech.synthesize(choice, text)
            return Synthesis(audio, self._usage(tenant_id, choice.engine, characters=len(text)))

        return await self._once(tenant_id, key, digest, run, self._encoders.synthesis)

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

    async def _once(
        self,
        tenant_id: str,
        key: str | None,
        digest: str,
        run: Callable[[], Awaitable[Result]],
        encode: Callable[[Result], bytes],
    ) -> Result | Replay:
        """Runs the request once per key (every time without one) and records its response and
        usage event in one transaction. With a key: claimed first (or a Replay, or refused as
        reused or in use), freed again if the work or the record fails."""
        record_id: str | None = None
        if key is not None:
            async with self._db.tenant_transaction(tenant_id) as tx:
                claimed = await claim(
                    IdempotencyRepository(tx, tenant_id), key, digest, self._clock(), self._keys.lease, self._keys.ttl
                )
            if isinstance(claimed, Replay):
                return claimed
            record_id = claimed.record_id
        try:
            result = await run()
            now = self._clock()
            async with self._db.tenant_transaction(tenant_id) as tx:
                if record_id is not None and not await IdempotencyRepository(tx, tenant_id).complete(
                    record_id, encode(result)
                ):
                    assert key is not None
                    raise ClaimLost(key)  # a retry took the key over: its result is the one recorded
                usage = result.usage
                await UsageOutboxRepository(tx, tenant_id).add(usage.event_id, self._encoders.usage_event(usage), now)
        except ClaimLost:
            raise
        except BaseException:
            if record_id is not None:
                await asyncio.shield(self._release(tenant_id, record_id))
            raise
        return result

    async def _release(self, tenant_id: str, record_id: str) -> None:
        async with self._db.tenant_transaction(tenant_id) as tx:
            await IdempotencyRepository(tx, tenant_id).release(record_id)
