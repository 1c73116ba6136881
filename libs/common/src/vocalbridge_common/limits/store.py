"""The counters behind rate limits and budgets, and the two stores that keep them.

`RedisStore` keeps them in Redis, changed only by the server-side scripts of
`redis_store.py`, so every replica of every service shares them and each change is
atomic. `MemoryStore` keeps them in the process with the same rules (the fallback of a
one-machine `make run` without Redis, and a model the Redis scripts are tested against).

The rules, whatever the store:

- A rate bucket (`Bucket`) holds `limit` units and refills continuously, `limit` per
  minute (the generic cell rate algorithm: the state is one number, the time at which
  the bucket is full again, "TAT"). A *consuming* charge fits when the bucket holds at
  least `cost`, and takes it. A *checking* charge (tokens, counted after the fact) only
  asks that the bucket is not empty or overdrawn. `force` charges (tokens of a finished
  turn) always take their cost, overdrawing the bucket.
- A budget (`Hold`) keeps, per window, what was spent and what turns in flight reserved.
  A reservation fits when spent + reserved + amount ≤ limit, and is recorded under the
  turn's reservation id with an expiry (a turn that dies without settling frees its
  reservation when that passes). Settling removes the reservation and adds what was
  actually spent to the window the turn was stored in.
- A charge is all or nothing: if any bucket or budget refuses, nothing changes.
- A budget window missing from the store (its first use, or a store that lost its data)
  is not guessed: `admit` reports it `missing`, and the caller asks again with a `seed`,
  what the ledger says the window spent so far. A settlement into a missing window is
  dropped: the ledger has it, and the next seed includes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vocalbridge_common.limits.model import RATE_PERIOD_MS


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Bucket:
    """A charge to one rate bucket."""

    key: str
    limit: int
    cost: int = 1
    consume: bool = True  # False: only check that the bucket is not empty


@dataclass(frozen=True)
class BucketState:
    limit: int
    remaining: int  # after this charge; negative while overdrawn
    reset_ms: int  # until the bucket is full again
    retry_after_ms: int = 0  # until the charge would fit (0 when it fits)


@dataclass(frozen=True)
class Hold:
    """A reservation against one budget window."""

    key: str
    limit: int
    amount: int
    # When the window's counters may be forgotten (its end plus a grace period), epoch ms.
    expire_at_ms: int
    # What the ledger says the window has spent; None: the store's own count (see `admit`).
    seed: int | None = None


@dataclass(frozen=True)
class BudgetState:
    spent: int
    reserved: int


@dataclass(frozen=True)
class Admission:
    """What `admit` decided. `missing`: the budget windows (indexes into `holds`) the store
    does not have; nothing was changed, ask again with their seeds."""

    allowed: bool
    buckets: tuple[BucketState, ...] = ()
    budgets: tuple[BudgetState, ...] = ()
    refused_bucket: int | None = None
    refused_budget: int | None = None
    missing: tuple[int, ...] = ()


@dataclass(frozen=True)
class Spend:
    """What a settled turn spent, added to a budget window if the store has it."""

    key: str
    amount: int


class CounterStore(Protocol):
    """Raises StoreUnavailable when it cannot answer."""

    async def admit(
        self,
        now_ms: int,
        buckets: Sequence[Bucket],
        holds: Sequence[Hold] = (),
        reservation_id: str = "",
        reservation_expire_ms: int = 0,
    ) -> Admission: ...

    async def settle(
        self,
        now_ms: int,
        forced: Sequence[Bucket] = (),
        held: Sequence[str] = (),
        reservation_id: str = "",
        spends: Sequence[Spend] = (),
    ) -> None:
        """Adds `forced` costs to their buckets, removes the reservation from the `held`
        budget keys, and adds `spends` to the windows that exist."""

    async def peek_buckets(self, now_ms: int, buckets: Sequence[Bucket]) -> tuple[BucketState, ...]: ...

    async def peek_budget(self, now_ms: int, key: str) -> BudgetState | None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def bucket_state(bucket: Bucket, tat: float, now: float) -> tuple[BucketState, float]:
    """The state after charging `bucket` on a bucket full again at `tat`, and the new TAT
    (the same rule as the Lua script's)."""
    interval = RATE_PERIOD_MS / bucket.limit
    base = max(tat, now)
    new_tat = base + bucket.cost * interval if bucket.consume else base
    if bucket.consume:
        over = new_tat - now - RATE_PERIOD_MS
        retry = math.ceil(over) if over > 0 else 0
    else:
        over = base - now - RATE_PERIOD_MS
        retry = math.floor(over) + 1 if over >= 0 else 0
    remaining = math.floor((RATE_PERIOD_MS - (new_tat - now)) / interval)
    return BucketState(bucket.limit, remaining, math.ceil(new_tat - now), retry), new_tat


@dataclass
class _Window:
    spent: int
    reserved: int = 0
    expire_at_ms: int = 0
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)  # id → (amount, expiry ms)

    def purge(self, now_ms: int) -> None:
        for rid, (amount, expiry) in list(self.reservations.items()):
            if expiry <= now_ms:
                del self.reservations[rid]
                self.reserved -= amount


class MemoryStore:
    """The counters in this process: for one process only (no sharing between workers)."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}

    def _tat(self, key: str, now: int) -> float:
        tat = self._tats.get(key, 0.0)
        if tat <= now:
            self._tats.pop(key, None)
            return 0.0
        return tat

    def _window(self, key: str, now: int) -> _Window | None:
        window = self._windows.get(key)
        if window is not None and window.expire_at_ms <= now:
            del self._windows[key]
            return None
        return window

    async def admit(
        self,
        now_ms: int,
        buckets: Sequence[Bucket],
        holds: Sequence[Hold] = (),
        reservation_id: str = "",
        reservation_expire_ms: int = 0,
    ) -> Admission:
        missing = tuple(i for i, h in enumerate(holds) if h.seed is None and self._window(h.key, now_ms) is None)
        if missing:
            return Admission(False, missing=missing)
        states: list[BucketState] = []
        new_tats: list[float] = []
        refused_bucket = None
        for index, bucket in enumerate(buckets):
            state, new_tat = bucket_state(bucket, self._tat(bucket.key, now_ms), now_ms)
            states.append(state)
            new_tats.append(new_tat)
            if state.retry_after_ms > 0 and refused_bucket is None:
                refused_bucket = index
        windows: list[_Window] = []
        budgets: list[BudgetState] = []
        refused_budget = None
        for index, hold in enumerate(holds):
            window = self._window(hold.key, now_ms)
            if window is None:
                window = self._windows[hold.key] = _Window(spent=hold.seed or 0, expire_at_ms=hold.expire_at_ms)
            window.purge(now_ms)
            windows.append(window)
            budgets.append(BudgetState(window.spent, window.reserved))
            if window.spent + window.reserved + hold.amount > hold.limit and refused_budget is None:
                refused_budget = index
        if refused_bucket is not None or refused_budget is not None:
            return Admission(False, tuple(states), tuple(budgets), refused_bucket, refused_budget)
        for bucket, new_tat in zip(buckets, new_tats, strict=True):
            if bucket.consume:
                self._tats[bucket.key] = new_tat
        for hold, window in zip(holds, windows, strict=True):
            window.reserved += hold.amount
            window.reservations[reservation_id] = (hold.amount, reservation_expire_ms)
        return Admission(True, tuple(states), tuple(budgets))

    async def settle(
        self,
        now_ms: int,
        forced: Sequence[Bucket] = (),
        held: Sequence[str] = (),
        reservation_id: str = "",
        spends: Sequence[Spend] = (),
    ) -> None:
        for bucket in forced:
            interval = RATE_PERIOD_MS / bucket.limit
            self._tats[bucket.key] = max(self._tat(bucket.key, now_ms), now_ms) + bucket.cost * interval
        for key in held:
            window = self._window(key, now_ms)
            if window is not None and reservation_id in window.reservations:
                amount, _ = window.reservations.pop(reservation_id)
                window.reserved -= amount
        for spend in spends:
            window = self._window(spend.key, now_ms)
            if window is not None:
                window.spent += spend.amount

    async def peek_buckets(self, now_ms: int, buckets: Sequence[Bucket]) -> tuple[BucketState, ...]:
        return tuple(
            bucket_state(Bucket(b.key, b.limit, 0, consume=False), self._tat(b.key, now_ms), now_ms)[0] for b in buckets
        )

    async def peek_budget(self, now_ms: int, key: str) -> BudgetState | None:
        window = self._window(key, now_ms)
        if window is None:
            return None
        window.purge(now_ms)
        return BudgetState(window.spent, window.reserved)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def seeded(holds: Sequence[Hold], seeds: Mapping[int, int]) -> tuple[Hold, ...]:
    """`holds` with the seeds given for some of them (by index)."""
    return tuple(
        Hold(h.key, h.limit, h.amount, h.expire_at_ms, seeds[i]) if i in seeds else h for i, h in enumerate(holds)
    )
