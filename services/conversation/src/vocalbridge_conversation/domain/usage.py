"""The usage and cost of a turn, and the usage record billing receives for it.

Pure: the price rows and the time are given. The same `vocalbridge_common.pricing`
function prices the turn here (the cost the caller sees) and in billing (the ledger).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_common.pricing import (
    DEFAULT_SPEECH_PROVIDER,
    Charge,
    PriceRow,
    Quantities,
    charge,
    quantize_audio_seconds,
    select_prices,
)
from vocalbridge_common.vocabulary import Channel
from vocalbridge_conversation.delivery import DeliveryResult
from vocalbridge_conversation.providers.base import Completion


@dataclass(frozen=True)
class TurnUsage:
    """What a turn consumed and what it cost, with the price rows that priced it."""

    quantities: Quantities
    charge: Charge

    @property
    def cost_micros(self) -> int:
        return self.charge.cost_micros


def turn_usage(
    completion: Completion,
    *,
    provider: str,
    model: str,
    prices: Iterable[PriceRow],
    at: datetime,
    audio_seconds: float | None = None,
    speech_provider: str = "",
) -> TurnUsage:
    """The usage of a reply `provider` produced at `at`. A spoken turn (`audio_seconds` given)
    also uses the speech engine: the seconds it transcribed and the characters it will say,
    priced by `speech_provider` (the default engine when empty)."""
    spoken = audio_seconds is not None
    quantities = Quantities(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        audio_seconds=quantize_audio_seconds(audio_seconds or 0),
        tts_characters=len(completion.text) if spoken else 0,
    )
    in_effect = select_prices(prices, provider, model, speech_provider or DEFAULT_SPEECH_PROVIDER, at=at)
    return TurnUsage(quantities, charge(quantities, in_effect))


@dataclass(frozen=True)
class UsageRecord:
    """One turn's usage as billing records it (the outbox carries it to billing)."""

    event_id: str
    tenant_id: str
    agent_id: str
    agent_version: int
    session_id: str
    message_name: str  # the reply that was billed
    channel: Channel
    provider: str
    model: str
    usage: TurnUsage
    delivery: DeliveryResult
    event_time: datetime


@dataclass(frozen=True)
class OutboxEntry:
    """A usage event as the billing outbox keeps it until the relay delivers it: its id,
    the event encoded for billing, and when the turn it bills was stored."""

    event_id: str
    payload: bytes
    create_time: datetime
