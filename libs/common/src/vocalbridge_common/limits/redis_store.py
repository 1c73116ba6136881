"""The counters in Redis, changed only by the server-side Lua scripts below: each call is
one round trip and atomic, so limits hold the same with one replica or ten.

Key layout (every key of a tenant shares the hash tag `{<tenant_id>}`, so a script's keys
are in one slot on a Redis Cluster too; `<prefix>` is `VB_REDIS_KEY_PREFIX`, `vb:`):

    <prefix>{<tenant>}:rl:<target>:req      rate bucket, requests: the TAT in epoch ms (string)
    <prefix>{<tenant>}:rl:<target>:tok      rate bucket, tokens
    <prefix>{<tenant>}:b:<target>:<start>   budget window starting at <start> (epoch ms), a hash:
                                            spent, reserved, r:<reservation id> → amount
    <prefix>{<tenant>}:b:<target>:<start>:r its reservations by expiry (sorted set)

with `<target>` = `tenant`, `key_…` or `agt_…`. A bucket key expires when the bucket is full
again; a window's keys a grace period after the window ends.

The rules are `store.py`'s; `MemoryStore` implements the same ones, and the tests run the
same cases against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from vocalbridge_common.limits.model import RATE_PERIOD_MS
from vocalbridge_common.limits.store import (
    Admission,
    Bucket,
    BucketState,
    BudgetState,
    Hold,
    Spend,
    StoreUnavailable,
)

# The numbers of a call travel as one space-separated string (ARGV[1]), parsed once here:
# cheaper for the client to encode than an argument each.
_PARSE = """
local a = {}
for v in string.gmatch(ARGV[1], '%S+') do a[#a + 1] = tonumber(v) end
"""

# KEYS: nb bucket keys, nh budget keys, nh reservation-set keys.
# Numbers: now, nb, nh, period, then per bucket (limit, cost, consume 0/1), per budget
# (limit, amount, expire_at, seed or -1), then the reservations' expiry; ARGV[2]: the
# reservation id. Returns {status, refused kind, refused index, then per bucket (remaining,
# reset, retry), then per budget (spent, reserved)}; status 1 allowed, 0 refused, 2 missing
# windows (then the missing budgets' indexes, 1-based, follow the status).
ADMIT = (
    _PARSE
    + """
local now, nb, nh, period = a[1], a[2], a[3], a[4]
local hbase = 5 + nb * 3
local missing = {2}
for j = 1, nh do
  if a[hbase + (j - 1) * 4 + 3] < 0 and redis.call('EXISTS', KEYS[nb + j]) == 0 then
    missing[#missing + 1] = j
  end
end
if #missing > 1 then return missing end
local out = {1, 0, 0}
local tats = {}
for i = 1, nb do
  local b = 5 + (i - 1) * 3
  local limit, cost, consume = a[b], a[b + 1], a[b + 2] == 1
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat
  local retry = 0
  if consume then
    new_tat = tat + cost * interval
    local over = new_tat - now - period
    if over > 0 then retry = math.ceil(over) end
  else
    local over = tat - now - period
    if over >= 0 then retry = math.floor(over) + 1 end
  end
  if retry > 0 and out[1] == 1 then out[1] = 0; out[2] = 1; out[3] = i end
  tats[i] = new_tat
  out[#out + 1] = math.floor((period - (new_tat - now)) / interval)
  out[#out + 1] = math.ceil(new_tat - now)
  out[#out + 1] = retry
end
local rid = ARGV[2]
local rexp = a[hbase + nh * 4]
for j = 1, nh do
  local h = hbase + (j - 1) * 4
  local key = KEYS[nb + j]
  local rkey = KEYS[nb + nh + j]
  local limit, amount, expire_at, seed = a[h], a[h + 1], a[h + 2], a[h + 3]
  if seed >= 0 and redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'spent', seed, 'reserved', 0)
    redis.call('PEXPIREAT', key, expire_at)
  end
  local expired = redis.call('ZRANGEBYSCORE', rkey, '-inf', now)
  for _, id in ipairs(expired) do
    local held = redis.call('HGET', key, 'r:' .. id)
    if held then
      redis.call('HINCRBY', key, 'reserved', -tonumber(held))
      redis.call('HDEL', key, 'r:' .. id)
    end
    redis.call('ZREM', rkey, id)
  end
  local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if spent + reserved + amount > limit and out[1] == 1 then out[1] = 0; out[2] = 2; out[3] = j end
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
if out[1] == 0 then return out end
for i = 1, nb do
  if a[5 + (i - 1) * 3 + 2] == 1 then
    redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
  end
end
for j = 1, nh do
  local h = hbase + (j - 1) * 4
  local key = KEYS[nb + j]
  local rkey = KEYS[nb + nh + j]
  redis.call('HINCRBY', key, 'reserved', a[h + 1])
  redis.call('HSET', key, 'r:' .. rid, a[h + 1])
  redis.call('ZADD', rkey, rexp, rid)
  redis.call('PEXPIREAT', rkey, a[h + 2])
end
return out
"""
)

# KEYS: nf forced bucket keys, nh budget keys, nh reservation-set keys, ns spend keys.
# Numbers: now, nf, nh, ns, period, per forced bucket (limit, cost), per spend the amount;
# ARGV[2]: the reservation id.
SETTLE = (
    _PARSE
    + """
local now, nf, nh, ns, period = a[1], a[2], a[3], a[4], a[5]
for i = 1, nf do
  local limit, cost = a[5 + (i - 1) * 2 + 1], a[5 + (i - 1) * 2 + 2]
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + cost * period / limit
  redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
end
local rid = ARGV[2]
for j = 1, nh do
  local key = KEYS[nf + j]
  local held = redis.call('HGET', key, 'r:' .. rid)
  if held then
    redis.call('HINCRBY', key, 'reserved', -tonumber(held))
    redis.call('HDEL', key, 'r:' .. rid)
  end
  redis.call('ZREM', KEYS[nf + nh + j], rid)
end
for k = 1, ns do
  local key = KEYS[nf + 2 * nh + k]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'spent', a[5 + nf * 2 + k])
  end
end
return 1
"""
)

# KEYS: a budget key and its reservation-set key. ARGV: now. Returns {} when the window is
# missing, else {spent, reserved} after dropping expired reservations.
PEEK_BUDGET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  local held = redis.call('HGET', KEYS[1], 'r:' .. id)
  if held then
    redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
  redis.call('ZREM', KEYS[2], id)
end
return {tonumber(redis.call('HGET', KEYS[1], 'spent') or '0'), tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')}
"""


def _packed(numbers: list[int]) -> str:
    return " ".join(map(str, numbers))


def reservations_key(budget_key: str) -> str:
    return budget_key + ":r"


class RedisStore:
    """The counters in Redis (redis-py's asyncio client, one connection pool per process)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)
        self._peek_budget = client.register_script(PEEK_BUDGET)

    @classmethod
    def from_url(cls, url: str, timeout_seconds: float) -> RedisStore:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
            max_connections=64,
        )
        return cls(client)

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return await script(keys=list(keys), args=list(args))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from error

    async def admit(
        self,
        now_ms: int,
        buckets: Sequence[Bucket],
        holds: Sequence[Hold] = (),
        reservation_id: str = "",
        reservation_expire_ms: int = 0,
    ) -> Admission:
        keys = [b.key for b in buckets] + [h.key for h in holds] + [reservations_key(h.key) for h in holds]
        numbers: list[int] = [now_ms, len(buckets), len(holds), RATE_PERIOD_MS]
        for b in buckets:
            numbers += (b.limit, b.cost, 1 if b.consume else 0)
        for h in holds:
            numbers += (h.limit, h.amount, h.expire_at_ms, -1 if h.seed is None else h.seed)
        numbers.append(reservation_expire_ms)
        reply = [int(v) for v in await self._run(self._admit, keys, [_packed(numbers), reservation_id or "-"])]
        if reply[0] == 2:
            return Admission(False, missing=tuple(j - 1 for j in reply[1:]))
        offset = 3
        states = []
        for b in buckets:
            remaining, reset, retry = reply[offset : offset + 3]
            states.append(BucketState(b.limit, remaining, reset, retry))
            offset += 3
        budgets = []
        for _ in holds:
            budgets.append(BudgetState(reply[offset], reply[offset + 1]))
            offset += 2
        kind, index = reply[1], reply[2] - 1
        return Admission(
            reply[0] == 1,
            tuple(states),
            tuple(budgets),
            refused_bucket=index if kind == 1 else None,
            refused_budget=index if kind == 2 else None,
        )

    async def settle(
        self,
        now_ms: int,
        forced: Sequence[Bucket] = (),
        held: Sequence[str] = (),
        reservation_id: str = "",
        spends: Sequence[Spend] = (),
    ) -> None:
        if not forced and not held and not spends:
            return
        keys = [b.key for b in forced] + list(held) + [reservations_key(k) for k in held] + [s.key for s in spends]
        numbers: list[int] = [now_ms, len(forced), len(held), len(spends), RATE_PERIOD_MS]
        for b in forced:
            numbers += (b.limit, b.cost)
        numbers += (s.amount for s in spends)
        await self._run(self._settle, keys, [_packed(numbers), reservation_id or "-"])

    async def peek_buckets(self, now_ms: int, buckets: Sequence[Bucket]) -> tuple[BucketState, ...]:
        if not buckets:
            return ()
        checks = [Bucket(b.key, b.limit, 0, consume=False) for b in buckets]
        admission = await self.admit(now_ms, checks)
        return admission.buckets

    async def peek_budget(self, now_ms: int, key: str) -> BudgetState | None:
        reply = await self._run(self._peek_budget, [key, reservations_key(key)], [now_ms])
        if not reply:
            return None
        return BudgetState(int(reply[0]), int(reply[1]))

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from error

    async def close(self) -> None:
        await self._client.aclose()
