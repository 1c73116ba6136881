"""The usage and cost of a turn, a pure function of the reply, the voice input, the
price rows and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from vocalbridge_common.pricing import SEED_PRICES, PriceUnit
from vocalbridge_conversation.domain.usage import turn_usage
from vocalbridge_conversation.providers.base import Completion

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
REPLY = Completion(text="Open nine to five.", prompt_tokens=12, completion_tokens=30, model="vendorA-m1")


def test_a_text_turn_is_priced_by_its_provider_per_token():
    usage = turn_usage(REPLY, provider="vendorA", model="vendorA-m1", prices=SEED_PRICES, at=NOW)
    assert usage.cost_micros == 84  # (12 + 30) tokens at 2000 micros per 1K (DESIGN §3)
    assert (usage.quantities.audio_seconds, usage.quantities.tts_characters) == (0, 0)
    assert [row.unit for row in usage.charge.prices_used] == [
        PriceUnit.PER_1K_PROMPT_TOKENS,
        PriceUnit.PER_1K_COMPLETION_TOKENS,
    ]
    fallback = turn_usage(REPLY, provider="vendorB", model="", prices=SEED_PRICES, at=NOW)
    assert fallback.cost_micros == 126  # the provider that served the turn, at 3000 per 1K


def test_a_spoken_turn_adds_the_seconds_heard_and_the_characters_to_say():
    usage = turn_usage(REPLY, provider="vendorA", model="", prices=SEED_PRICES, at=NOW, audio_seconds=1.2345)
    assert usage.quantities.audio_seconds == Decimal("1.235")  # whole milliseconds, half up
    assert usage.quantities.tts_characters == len(REPLY.text)
    # 84 for the tokens + 123.5 for 1.235 s at 100 micros + 270 for 18 characters at 15 micros,
    # rounded once, on the total, half up.
    assert usage.cost_micros == 478
    other_engine = turn_usage(
        REPLY, provider="vendorA", model="", prices=SEED_PRICES, at=NOW, audio_seconds=1.0, speech_provider="elsewhere"
    )
    assert set(other_engine.charge.unpriced_units) == {PriceUnit.PER_AUDIO_SECOND, PriceUnit.PER_CHARACTER}


def test_a_provider_without_prices_is_charged_nothing_and_reported():
    usage = turn_usage(REPLY, provider="unlisted", model="", prices=SEED_PRICES, at=NOW)
    assert usage.cost_micros == 0 and usage.charge.prices_used == ()
    assert usage.charge.unpriced_units == (PriceUnit.PER_1K_PROMPT_TOKENS, PriceUnit.PER_1K_COMPLETION_TOKENS)


def test_a_price_counts_from_its_effective_time():
    raised = replace(SEED_PRICES[0], price_id="prc_raised", micros_per_unit=4000, effective_time=NOW)
    before = turn_usage(REPLY, provider="vendorA", model="", prices=[*SEED_PRICES, raised], at=NOW - timedelta(1))
    after = turn_usage(REPLY, provider="vendorA", model="", prices=[*SEED_PRICES, raised], at=NOW)
    assert (before.cost_micros, after.cost_micros) == (84, 12 * 4 + 30 * 2)
