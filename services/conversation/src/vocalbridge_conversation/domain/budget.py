"""What a turn may cost at most: the amount it reserves in its budgets before any provider
is called. Pure: the prices and the time are given.

The worst case is the prompt's tokens plus the most output the turn may produce, priced
at the dearer of the agent's primary and fallback provider (a fallback can cost more than
the primary); a spoken turn adds its audio seconds and the characters its reply may have
(`characters_per_token` per output token), priced by the speech engine. A reservation is
a true upper bound on the turn's cost when the provider counts prompt tokens as the
gateway does (the simulated providers do), stops at `max_output_tokens` (every provider
is asked to), the prices do not change while the turn runs, and a spoken reply averages
at most `characters_per_token` characters per token.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from vocalbridge_common.pricing import (
    DEFAULT_SPEECH_PROVIDER,
    PriceRow,
    Quantities,
    charge,
    quantize_audio_seconds,
    select_prices,
)


def worst_case_cost(
    *,
    prompt_tokens: int,
    max_output_tokens: int,
    providers: Iterable[str],
    model: str,
    prices: Iterable[PriceRow],
    at: datetime,
    audio_seconds: float | None = None,
    speech_provider: str = "",
    characters_per_token: int = 16,
) -> int:
    """The most a turn may cost in micros, whichever of `providers` serves it."""
    rows = tuple(prices)
    spoken = audio_seconds is not None
    quantities = Quantities(
        prompt_tokens=prompt_tokens,
        completion_tokens=max_output_tokens,
        audio_seconds=quantize_audio_seconds(audio_seconds or 0),
        tts_characters=max_output_tokens * characters_per_token if spoken else 0,
    )
    return max(
        (
            charge(
                quantities, select_prices(rows, p, model, speech_provider or DEFAULT_SPEECH_PROVIDER, at=at)
            ).cost_micros
            for p in providers
        ),
        default=0,
    )
