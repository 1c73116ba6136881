"""The usage of a standalone speech request (Transcribe, Synthesize): audio seconds or
characters, priced with the one shared pricing function at the speech provider's rows.

The event billing receives carries no agent or session: the request belonged to neither."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_common.pricing import Charge, PriceRow, Quantities, charge, quantize_audio_seconds, select_prices


@dataclass(frozen=True)
class SpeechUsage:
    event_id: str
    tenant_id: str
    speech_provider: str
    engine: str  # recorded as the event's model
    quantities: Quantities
    charge: Charge
    event_time: datetime


def speech_usage(
    *,
    event_id: str,
    tenant_id: str,
    speech_provider: str,
    engine: str,
    audio_seconds: float = 0.0,
    characters: int = 0,
    prices: Iterable[PriceRow],
    at: datetime,
) -> SpeechUsage:
    quantities = Quantities(audio_seconds=quantize_audio_seconds(audio_seconds), tts_characters=characters)
    in_effect = select_prices(prices, speech_provider, "", speech_provider, at=at)
    return SpeechUsage(event_id, tenant_id, speech_provider, engine, quantities, charge(quantities, in_effect), at)
