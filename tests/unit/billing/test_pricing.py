"""The shared pricing function: known costs to the micro, price selection over
time and models, the rounding rule, and properties over random quantities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalbridge_common.ids import ID_PATTERN
from vocalbridge_common.pricing import (
    DEFAULT_SPEECH_PROVIDER,
    SEED_EFFECTIVE_TIME,
    SEED_PRICES,
    PriceRow,
    PriceUnit,
    Quantities,
    charge,
    cost_micros,
    exact_cost,
    quantize_audio_seconds,
    round_half_up,
    select_prices,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PROMPT, COMPLETION = PriceUnit.PER_1K_PROMPT_TOKENS, PriceUnit.PER_1K_COMPLETION_TOKENS
AUDIO, CHARS = PriceUnit.PER_AUDIO_SECOND, PriceUnit.PER_CHARACTER


def seed(provider: str, model: str = "", at: datetime = NOW):
    return select_prices(SEED_PRICES, provider, model, DEFAULT_SPEECH_PROVIDER, at)


def row(price_id, provider, unit, micros, when, model=""):
    return PriceRow(price_id, provider, model, unit, micros, when)


# -- known costs --------------------------------------------------------------


def test_design_example_vendor_a_12_prompt_30_completion_costs_84_micros():
    assert cost_micros(Quantities(prompt_tokens=12, completion_tokens=30), seed("vendorA")) == 84


@pytest.mark.parametrize(
    ("provider", "prompt", "completion", "expected"),
    [
        ("vendorA", 1000, 1000, 4000),
        ("vendorB", 1000, 1000, 6000),
        ("vendorA", 12, 30, 84),
        ("vendorB", 12, 30, 126),
        ("vendorA", 1, 0, 2),
        ("vendorB", 1, 0, 3),
        ("vendorA", 0, 0, 0),
        ("vendorB", 123_456, 654_321, 2_333_331),  # 777,777 × 3 = 2,333,331
    ],
)
def test_seed_token_prices_to_the_micro(provider, prompt, completion, expected):
    assert cost_micros(Quantities(prompt, completion), seed(provider)) == expected


def test_speech_units_are_priced_by_the_speech_engine():
    prices = seed("vendorA")
    # 2.5 s × 100 + 11 chars × 15 + 10 prompt tokens × 2 = 250 + 165 + 20
    quantities = Quantities(prompt_tokens=10, audio_seconds=2.5, tts_characters=11)
    result = charge(quantities, prices)
    assert result.cost_micros == 435
    assert [r.unit for r in result.prices_used] == [PROMPT, AUDIO, CHARS]
    assert {r.provider for r in result.prices_used} == {"vendorA", DEFAULT_SPEECH_PROVIDER}
    assert result.unpriced_units == ()


def test_prices_used_lists_only_units_consumed():
    result = charge(Quantities(prompt_tokens=5), seed("vendorB"))
    assert [r.price_id for r in result.prices_used] == ["prc_00000000000000000000000003"]


def test_seed_prices_have_stable_valid_ids_and_one_row_per_provider_unit():
    assert all(ID_PATTERN.match(r.price_id) for r in SEED_PRICES)
    assert len({r.price_id for r in SEED_PRICES}) == len(SEED_PRICES)
    assert len({(r.provider, r.model, r.unit) for r in SEED_PRICES}) == len(SEED_PRICES)
    assert all(r.effective_time == SEED_EFFECTIVE_TIME for r in SEED_PRICES)
    assert {(r.provider, r.unit): r.micros_per_unit for r in SEED_PRICES if r.unit in (PROMPT, COMPLETION)} == {
        ("vendorA", PROMPT): 2000,
        ("vendorA", COMPLETION): 2000,
        ("vendorB", PROMPT): 3000,
        ("vendorB", COMPLETION): 3000,
    }


# -- selection ----------------------------------------------------------------


def test_price_change_mid_run_selects_the_old_row_before_and_the_new_row_after():
    change = NOW
    rows = [
        *SEED_PRICES,
        row("prc_new_prompt", "vendorA", PROMPT, 5000, change),
        row("prc_new_completion", "vendorA", COMPLETION, 5000, change),
    ]
    before = select_prices(rows, "vendorA", "", at=change - timedelta(microseconds=1))
    at_change = select_prices(rows, "vendorA", "", at=change)
    after = select_prices(rows, "vendorA", "", at=change + timedelta(days=3))
    assert before[PROMPT].price_id == "prc_00000000000000000000000001"
    assert at_change[PROMPT].price_id == "prc_new_prompt" == after[PROMPT].price_id
    quantities = Quantities(12, 30)
    assert cost_micros(quantities, before) == 84
    assert cost_micros(quantities, after) == 210


def test_a_future_row_is_not_in_effect_yet():
    rows = [*SEED_PRICES, row("prc_future", "vendorA", PROMPT, 9, NOW + timedelta(days=1))]
    assert select_prices(rows, "vendorA", "", at=NOW)[PROMPT].micros_per_unit == 2000


def test_nothing_is_in_effect_before_the_first_row():
    assert select_prices(SEED_PRICES, "vendorA", "", at=SEED_EFFECTIVE_TIME - timedelta(seconds=1)) == {}


def test_model_specific_row_beats_provider_wide_row_even_when_older():
    rows = [
        row("prc_wide_old", "vendorA", PROMPT, 2000, NOW - timedelta(days=10)),
        row("prc_model", "vendorA", PROMPT, 1000, NOW - timedelta(days=5), model="small"),
        row("prc_wide_new", "vendorA", PROMPT, 2500, NOW - timedelta(days=1)),
    ]
    assert select_prices(rows, "vendorA", "small", at=NOW)[PROMPT].price_id == "prc_model"
    assert select_prices(rows, "vendorA", "large", at=NOW)[PROMPT].price_id == "prc_wide_new"
    assert select_prices(rows, "vendorA", "", at=NOW)[PROMPT].price_id == "prc_wide_new"
    # Before the model row took effect, the wildcard of that time applies.
    assert select_prices(rows, "vendorA", "small", at=NOW - timedelta(days=6))[PROMPT].price_id == "prc_wide_old"


def test_other_providers_rows_are_never_selected():
    prices = select_prices(SEED_PRICES, "vendorC", "", at=NOW)
    assert set(prices) == {AUDIO, CHARS}
    result = charge(Quantities(prompt_tokens=100, completion_tokens=1), prices)
    assert result.cost_micros == 0 and result.unpriced_units == (PROMPT, COMPLETION)


def test_speech_provider_is_its_own_dimension():
    rows = [*SEED_PRICES, row("prc_cloud_audio", "cloud-speech", AUDIO, 400, SEED_EFFECTIVE_TIME)]
    assert select_prices(rows, "vendorA", "", "cloud-speech", NOW)[AUDIO].price_id == "prc_cloud_audio"
    assert CHARS not in select_prices(rows, "vendorA", "", "cloud-speech", NOW)


def test_select_requires_an_aware_time():
    with pytest.raises(ValueError):
        select_prices(SEED_PRICES, "vendorA", "", at=datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        select_prices(SEED_PRICES, "vendorA", "")


# -- rounding -----------------------------------------------------------------


def test_total_is_rounded_once_half_up():
    prices = {PROMPT: row("p", "x", PROMPT, 2500, NOW), COMPLETION: row("c", "x", COMPLETION, 2500, NOW)}
    assert cost_micros(Quantities(1, 0), prices) == 3  # 2.5 → 3
    assert cost_micros(Quantities(1, 1), prices) == 5  # 2.5 + 2.5 = 5, not 3 + 3
    odd = {PROMPT: row("p", "x", PROMPT, 1, NOW)}
    assert cost_micros(Quantities(499, 0), odd) == 0  # 0.499
    assert cost_micros(Quantities(500, 0), odd) == 1  # 0.5
    assert cost_micros(Quantities(1499, 0), odd) == 1  # 1.499


def test_audio_is_quantized_to_milliseconds_half_up_from_the_decimal_repr():
    assert quantize_audio_seconds(1.2345) == Decimal("1.235")
    assert quantize_audio_seconds(1.2344) == Decimal("1.234")
    assert quantize_audio_seconds(0.1) == Decimal("0.100")
    assert quantize_audio_seconds(Fraction(1, 3)) == Decimal("0.333")
    assert Quantities(audio_seconds=2.0005).audio_millis == 2001
    prices = {AUDIO: row("a", "s", AUDIO, 100, NOW)}
    # 0.0015 s → 2 ms → 0.2 micros → 0; 0.005 s → 0.5 micros → 1
    assert cost_micros(Quantities(audio_seconds=0.0015), prices) == 0
    assert cost_micros(Quantities(audio_seconds=0.005), prices) == 1
    assert cost_micros(Quantities(audio_seconds=1.2345), prices) == 124  # 1.235 s × 100 = 123.5 → 124


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf"), "abc", 1e40])
def test_invalid_audio_seconds_are_refused(bad):
    with pytest.raises(ValueError):
        Quantities(audio_seconds=bad)


def test_negative_or_non_integer_counts_are_refused():
    with pytest.raises(ValueError):
        Quantities(prompt_tokens=-1)
    with pytest.raises(TypeError):
        Quantities(completion_tokens=1.5)
    with pytest.raises(ValueError):
        row("p", "x", PROMPT, -1, NOW)
    with pytest.raises(ValueError):
        row("p", "x", PROMPT, 1, datetime(2026, 1, 1))


def test_round_half_up_refuses_negative_values():
    assert round_half_up(Fraction(5, 2)) == 3
    with pytest.raises(ValueError):
        round_half_up(Fraction(-1, 2))


# -- properties -----------------------------------------------------------------

counts = st.integers(min_value=0, max_value=10**9)
audio = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)
quantities = st.builds(Quantities, counts, counts, audio, counts)
micros = st.integers(min_value=0, max_value=10**7)


@st.composite
def price_maps(draw):
    units = draw(st.sets(st.sampled_from(list(PriceUnit))))
    return {unit: row(f"p{unit}", "x", unit, draw(micros), NOW) for unit in units}


@given(quantities, quantities, price_maps())
def test_cost_is_additive_exactly_before_rounding_and_within_a_micro_after(a, b, prices):
    assert exact_cost(a + b, prices) == exact_cost(a, prices) + exact_cost(b, prices)
    assert abs(cost_micros(a + b, prices) - cost_micros(a, prices) - cost_micros(b, prices)) <= 1


@given(quantities, price_maps())
def test_cost_is_non_negative_and_within_half_a_micro_of_exact(q, prices):
    cost = cost_micros(q, prices)
    assert cost >= 0
    assert abs(Fraction(cost) - exact_cost(q, prices)) <= Fraction(1, 2)


@given(quantities, quantities, price_maps())
def test_cost_is_monotonic_in_quantities(a, b, prices):
    assert cost_micros(a + b, prices) >= cost_micros(a, prices)


@given(
    st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=50),
    st.sampled_from(["vendorA", "vendorB"]),
)
def test_whole_thousands_of_tokens_cost_exactly_the_listed_price(thousands, provider):
    prices = seed(provider)
    per_1k = prices[PROMPT].micros_per_unit
    total = sum(cost_micros(Quantities(k * 1000, 0), prices) for k in thousands)
    assert total == sum(thousands) * per_1k == cost_micros(Quantities(sum(thousands) * 1000, 0), prices)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_audio_quantization_is_idempotent_and_within_half_a_millisecond(seconds):
    once = quantize_audio_seconds(seconds)
    assert quantize_audio_seconds(once) == once
    assert quantize_audio_seconds(float(once)) == once
    assert abs(once - Decimal(repr(seconds))) <= Decimal("0.0005")
