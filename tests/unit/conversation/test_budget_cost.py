"""A turn's worst-case cost: what it reserves in its budgets before any provider call."""

from __future__ import annotations

from datetime import UTC, datetime

from vocalbridge_common.pricing import SEED_PRICES
from vocalbridge_conversation.domain.budget import worst_case_cost

AT = datetime(2026, 11, 26, tzinfo=UTC)


def test_the_worst_case_is_priced_at_the_dearer_of_primary_and_fallback():
    # vendorA 2000 and vendorB 3000 micros per 1K tokens: (100 + 400) tokens at vendorB's price.
    common = {"prompt_tokens": 100, "max_output_tokens": 400, "model": "", "prices": SEED_PRICES, "at": AT}
    assert worst_case_cost(providers=["vendorA"], **common) == 1000
    assert worst_case_cost(providers=["vendorA", "vendorB"], **common) == 1500
    assert worst_case_cost(providers=["vendorB", "vendorA"], **common) == 1500


def test_a_spoken_turn_also_reserves_its_audio_and_the_characters_of_its_longest_reply():
    cost = worst_case_cost(
        prompt_tokens=10,
        max_output_tokens=20,
        providers=["vendorA"],
        model="",
        prices=SEED_PRICES,
        at=AT,
        audio_seconds=2.5,
        characters_per_token=16,
    )
    # 30 tokens × 2 + 2.5 s × 100 + 320 characters × 15.
    assert cost == 60 + 250 + 4800


def test_an_unpriced_provider_reserves_nothing_for_its_tokens():
    assert (
        worst_case_cost(
            prompt_tokens=10, max_output_tokens=10, providers=["nobody"], model="", prices=SEED_PRICES, at=AT
        )
        == 0
    )
