"""Where a turn meets its tenant's limits: before any provider is called, the agent's
request limit is charged, its token limit checked and the turn's worst-case cost reserved
in every budget that applies (tenant, API key, agent), in one counter-store call; once
the turn is stored, its tokens are counted (tenant, key, agent) and the reservation is
replaced by what it cost; a turn that fails releases its reservation.

A tenant without limits costs a dictionary lookup: its (empty) limits are cached for a
few seconds like every tenant's, and no counter is touched. When auth cannot say what a
tenant's limits are (and none are cached), turns run without them for the cache's TTL,
logged: Envoy's Check fails closed when auth is down, so only calls that bypass the edge
can get here, and they do not fail with a 5xx for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from vocalbridge_common.context import current_identity
from vocalbridge_common.db import utcnow
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.limits.limiter import Limiter, TurnTicket
from vocalbridge_common.limits.model import TENANT, Target
from vocalbridge_conversation.domain.budget import worst_case_cost
from vocalbridge_conversation.domain.turns import AgentConfig, VoiceInput
from vocalbridge_conversation.domain.usage import TurnUsage
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers.base import CompletionRequest, count_prompt_tokens

log = logging.getLogger(__name__)


class TurnLimits:
    def __init__(
        self,
        limits: TenantLimitsCache,
        limiter: Limiter,
        prices: PriceBook,
        settings: LimitSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._limits = limits
        self._limiter = limiter
        self._prices = prices
        self._settings = settings
        self._clock = clock

    async def start(
        self, tenant_id: str, agent: AgentConfig, request: CompletionRequest, voice: VoiceInput | None
    ) -> tuple[CompletionRequest, TurnTicket | None]:
        """The request to send (its output capped when a budget applies and the agent sets no
        maximum, so the reservation is a true bound) and the turn's ticket; raises
        RateLimited or BudgetExceeded before any provider is called."""
        limits = await self._limits.get(tenant_id)
        if limits.empty:
            return request, None
        key_id = current_identity().key_id
        budgeted = any(limits.budget(t) for t in (TENANT, Target.key(key_id), Target.agent(agent.agent_id)))
        cost = 0
        if budgeted:
            if request.max_output_tokens is None:
                request = replace(request, max_output_tokens=self._settings.default_max_output_tokens)
            providers = [agent.primary_provider] + ([agent.fallback_provider] if agent.fallback_provider else [])
            cost = worst_case_cost(
                prompt_tokens=count_prompt_tokens(request.messages),
                max_output_tokens=request.max_output_tokens or 0,
                providers=providers,
                model=agent.model,
                prices=self._prices.rows(),
                at=self._clock(),
                audio_seconds=voice.audio_seconds if voice else None,
                speech_provider=voice.speech_provider if voice else "",
                characters_per_token=self._settings.reserved_characters_per_token,
            )
        ticket = await self._limiter.start_turn(limits, key_id, agent.agent_id, cost)
        return request, ticket

    async def finish(self, ticket: TurnTicket | None, usage: TurnUsage) -> None:
        quantities = usage.quantities
        await self._limiter.finish_turn(
            ticket, quantities.prompt_tokens + quantities.completion_tokens, usage.cost_micros
        )

    async def release(self, ticket: TurnTicket | None) -> None:
        await self._limiter.release_turn(ticket)
