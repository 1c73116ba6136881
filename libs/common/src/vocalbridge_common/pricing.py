"""The one pricing function of the gateway, shared by the conversation service
(the cost it returns to the caller) and billing (the authoritative ledger).

Pure and exact: money is integer micro-US-dollars (1 USD = 1,000,000 micros),
quantities are integers or Decimals, the arithmetic is done with Fractions,
never floats. Both sides call the same functions with the same price rows, so
they agree to the micro by construction.

Rules, in the order they apply:

1. Audio seconds are quantized to whole milliseconds, half up, before anything
   else (`quantize_audio_seconds`): 1.2345 s is 1.235 s. A float is read
   through its shortest decimal repr, so 0.1 means 0.1, not 0.1000000000000000055….
   The ledger stores the same milliseconds, so a recomputation from the ledger
   gives the same cost.
2. The price in effect for a unit at time `at` (`select_prices`): among the rows
   of the unit's provider with `effective_time <= at`, a row for the exact model
   beats a provider-wide row (empty model); among those, the latest
   `effective_time` wins. Token units are priced by the LLM provider that served
   the turn; audio seconds and characters by the speech engine.
3. The cost (`charge`, `cost_micros`): the exact sum over units of
   quantity × price (per-1K units divide by 1,000), rounded ONCE, on the total,
   to the nearest whole micro, halves up. A unit with a zero quantity costs
   nothing and needs no price; a unit with a quantity and no price in effect is
   charged nothing and reported in `Charge.unpriced_units`, for the caller to
   log (the gateway never fails a turn, or loses usage, over a missing price).

Example (DESIGN §3): vendorA at 2000 micros per 1K tokens, 12 prompt and 30
completion tokens: (12 + 30) × 2000 / 1000 = 84 micros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction

__all__ = [
    "DEFAULT_SPEECH_PROVIDER",
    "LLM_UNITS",
    "SEED_EFFECTIVE_TIME",
    "SEED_PRICES",
    "SPEECH_UNITS",
    "Charge",
    "PriceRow",
    "PriceUnit",
    "Quantities",
    "charge",
    "cost_micros",
    "exact_cost",
    "quantize_audio_seconds",
    "round_half_up",
    "select_prices",
]


class PriceUnit(StrEnum):
    """What a price is charged per; the names are billing.v1.PriceUnit's without `PRICE_UNIT_`."""

    PER_1K_PROMPT_TOKENS = "PER_1K_PROMPT_TOKENS"
    PER_1K_COMPLETION_TOKENS = "PER_1K_COMPLETION_TOKENS"
    PER_AUDIO_SECOND = "PER_AUDIO_SECOND"
    PER_CHARACTER = "PER_CHARACTER"


LLM_UNITS = (PriceUnit.PER_1K_PROMPT_TOKENS, PriceUnit.PER_1K_COMPLETION_TOKENS)
SPEECH_UNITS = (PriceUnit.PER_AUDIO_SECOND, PriceUnit.PER_CHARACTER)

# The offline speech engine (pocketsphinx + espeak-ng) that voice turns use.
DEFAULT_SPEECH_PROVIDER = "local-speech"

_MILLISECOND = Decimal("0.001")


def quantize_audio_seconds(seconds: float | int | str | Decimal | Fraction) -> Decimal:
    """`seconds` as a Decimal of whole milliseconds, half up; refuses negative or non-finite values."""
    try:
        if isinstance(seconds, Fraction):
            value = Decimal(seconds.numerator) / Decimal(seconds.denominator)
        elif isinstance(seconds, float):
            if not math.isfinite(seconds):
                raise ValueError(f"audio seconds must be finite, got {seconds!r}")
            value = Decimal(repr(seconds))
        else:
            value = Decimal(seconds)
    except InvalidOperation:
        raise ValueError(f"audio seconds must be a number, got {seconds!r}") from None
    if not value.is_finite():
        raise ValueError(f"audio seconds must be finite, got {seconds!r}")
    if value < 0:
        raise ValueError(f"audio seconds must not be negative, got {seconds!r}")
    try:
        return value.quantize(_MILLISECOND, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError(f"audio seconds out of range: {seconds!r}") from None


@dataclass(frozen=True)
class Quantities:
    """What one turn consumed. `audio_seconds` is normalized to whole milliseconds (rule 1)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: Decimal = Decimal(0)
    tts_characters: int = 0

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "tts_characters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        object.__setattr__(self, "audio_seconds", quantize_audio_seconds(self.audio_seconds))

    @classmethod
    def from_audio_millis(
        cls, prompt_tokens: int, completion_tokens: int, audio_millis: int, tts_characters: int
    ) -> Quantities:
        return cls(prompt_tokens, completion_tokens, Decimal(audio_millis) * _MILLISECOND, tts_characters)

    @property
    def audio_millis(self) -> int:
        return int(self.audio_seconds * 1000)

    def amount(self, unit: PriceUnit) -> Fraction:
        """The quantity in `unit`'s terms (thousands of tokens for the per-1K units)."""
        if unit is PriceUnit.PER_1K_PROMPT_TOKENS:
            return Fraction(self.prompt_tokens, 1000)
        if unit is PriceUnit.PER_1K_COMPLETION_TOKENS:
            return Fraction(self.completion_tokens, 1000)
        if unit is PriceUnit.PER_AUDIO_SECOND:
            return Fraction(self.audio_millis, 1000)
        return Fraction(self.tts_characters)

    def __add__(self, other: Quantities) -> Quantities:
        return Quantities(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.audio_seconds + other.audio_seconds,
            self.tts_characters + other.tts_characters,
        )


@dataclass(frozen=True)
class PriceRow:
    """One row of the price list. Rows are immutable; a price change is a new row."""

    price_id: str
    provider: str
    model: str  # empty: every model of the provider without a row of its own
    unit: PriceUnit
    micros_per_unit: int
    effective_time: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", PriceUnit(self.unit))
        if isinstance(self.micros_per_unit, bool) or not isinstance(self.micros_per_unit, int):
            raise TypeError("micros_per_unit must be an int")
        if self.micros_per_unit < 0:
            raise ValueError("micros_per_unit must not be negative")
        if self.effective_time.tzinfo is None:
            raise ValueError("effective_time must be timezone-aware")


def select_prices(
    rows: Iterable[PriceRow],
    provider: str,
    model: str,
    speech_provider: str = DEFAULT_SPEECH_PROVIDER,
    at: datetime | None = None,
    *,
    speech_model: str = "",
) -> dict[PriceUnit, PriceRow]:
    """The row in effect at `at` for each unit that has one (rule 2).

    Token units come from `provider`/`model`, speech units from
    `speech_provider`/`speech_model`. Units without a row in effect are absent.
    """
    if at is None:
        raise TypeError("select_prices needs the time `at` the usage happened")
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    wanted = {unit: (provider, model) for unit in LLM_UNITS}
    wanted.update({unit: (speech_provider, speech_model) for unit in SPEECH_UNITS})
    best: dict[PriceUnit, tuple[tuple[int, datetime, str], PriceRow]] = {}
    for row in rows:
        target = wanted.get(row.unit)
        if target is None or row.provider != target[0] or row.effective_time > at:
            continue
        if row.model == target[1] and row.model:
            specificity = 1
        elif row.model == "":
            specificity = 0
        else:
            continue
        rank = (specificity, row.effective_time, row.price_id)
        current = best.get(row.unit)
        if current is None or rank > current[0]:
            best[row.unit] = (rank, row)
    return {unit: row for unit, (_, row) in best.items()}


@dataclass(frozen=True)
class Charge:
    """The cost of some quantities at some prices."""

    cost_micros: int
    # The rows charged, one per unit with a non-zero quantity and a price, in PriceUnit order.
    prices_used: tuple[PriceRow, ...]
    # Units with a non-zero quantity but no price: charged nothing.
    unpriced_units: tuple[PriceUnit, ...] = field(default=())


def exact_cost(quantities: Quantities, prices: Mapping[PriceUnit, PriceRow]) -> Fraction:
    """The unrounded cost in micros (exactly additive over quantities)."""
    total = Fraction(0)
    for unit in PriceUnit:
        row = prices.get(unit)
        if row is not None:
            total += quantities.amount(unit) * row.micros_per_unit
    return total


def round_half_up(value: Fraction) -> int:
    """The nearest integer to a non-negative `value`, halves up."""
    if value < 0:
        raise ValueError("costs are never negative")
    return math.floor(value + Fraction(1, 2))


def charge(quantities: Quantities, prices: Mapping[PriceUnit, PriceRow]) -> Charge:
    """Rule 3: the cost, the rows it used and the units it could not price."""
    used: list[PriceRow] = []
    unpriced: list[PriceUnit] = []
    for unit in PriceUnit:
        if quantities.amount(unit) == 0:
            continue
        row = prices.get(unit)
        if row is None:
            unpriced.append(unit)
        else:
            used.append(row)
    used_prices = {row.unit: row for row in used}
    return Charge(round_half_up(exact_cost(quantities, used_prices)), tuple(used), tuple(unpriced))


def cost_micros(quantities: Quantities, prices: Mapping[PriceUnit, PriceRow]) -> int:
    """The cost in whole micro-US-dollars (rule 3)."""
    return charge(quantities, prices).cost_micros


# Prices the gateway starts with. Billing seeds its price table with exactly
# these rows (same ids), so the conversation service can price a turn with them
# when billing is unreachable and still agree with the ledger.
SEED_EFFECTIVE_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _seed(number: int, provider: str, unit: PriceUnit, micros_per_unit: int) -> PriceRow:
    return PriceRow(f"prc_{number:026d}", provider, "", unit, micros_per_unit, SEED_EFFECTIVE_TIME)


SEED_PRICES: tuple[PriceRow, ...] = (
    # vendorA: $0.002 per 1K tokens, prompt and completion alike.
    _seed(1, "vendorA", PriceUnit.PER_1K_PROMPT_TOKENS, 2000),
    _seed(2, "vendorA", PriceUnit.PER_1K_COMPLETION_TOKENS, 2000),
    # vendorB: $0.003 per 1K tokens.
    _seed(3, "vendorB", PriceUnit.PER_1K_PROMPT_TOKENS, 3000),
    _seed(4, "vendorB", PriceUnit.PER_1K_COMPLETION_TOKENS, 3000),
    # The offline speech engine: $0.006 per minute transcribed (100 micros a
    # second) and $15 per million characters synthesized (15 micros a character).
    _seed(5, DEFAULT_SPEECH_PROVIDER, PriceUnit.PER_AUDIO_SECOND, 100),
    _seed(6, DEFAULT_SPEECH_PROVIDER, PriceUnit.PER_CHARACTER, 15),
)
