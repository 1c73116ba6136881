"""Transcribe and Synthesize on their own spend the tenant's (and the key's) budgets like
turns do. Their cost is known before the engine runs (the audio's seconds, the text's
characters), so the reservation is exact: held before the engine runs, spent when it
succeeds, released when it fails. Turns spoken through Converse are budgeted by the
conversation service, which runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from vocalbridge_common.context import current_identity
from vocalbridge_common.db import utcnow
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.limiter import Limiter
from vocalbridge_common.pricing import PriceRow, Quantities, charge, quantize_audio_seconds, select_prices


class SpeechBudget:
    def __init__(
        self,
        limits: TenantLimitsCache | None,
        limiter: Limiter | None,
        speech_provider: str,
        prices: Sequence[PriceRow],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._limits = limits
        self._limiter = limiter
        self._speech_provider = speech_provider
        self._prices = prices
        self._clock = clock

    @classmethod
    def unlimited(cls) -> SpeechBudget:
        return cls(None, None, "", ())

    def cost(self, *, audio_seconds: float = 0.0, characters: int = 0) -> int:
        """What the request will cost: speech_usage's formula, before the engine runs."""
        quantities = Quantities(audio_seconds=quantize_audio_seconds(audio_seconds), tts_characters=characters)
        provider = self._speech_provider
        return charge(quantities, select_prices(self._prices, provider, "", provider, at=self._clock())).cost_micros

    @asynccontextmanager
    async def hold(self, tenant_id: str, *, audio_seconds: float = 0.0, characters: int = 0) -> AsyncIterator[None]:
        """Reserves the request's cost (BudgetExceeded when it does not fit) for the engine's
        run, spends it when the run succeeds and releases it when it fails."""
        if self._limits is None or self._limiter is None:
            yield
            return
        limits = await self._limits.get(tenant_id)
        if not limits.budgets:
            yield
            return
        cost = self.cost(audio_seconds=audio_seconds, characters=characters)
        ticket = await self._limiter.start_turn(limits, current_identity().key_id, "", cost)
        try:
            yield
        except BaseException:
            await self._limiter.release_turn(ticket)
            raise
        await self._limiter.finish_turn(ticket, 0, cost)
