"""Limits that hold across every process of a deployment: concurrency caps and start rates.

Tasks that name a limit key (``"openai"``, or their own task type) run only with a permit. A
worker takes permits *before* it reads entries of such a task type, as many as it may start now,
and reads at most that many, so a task waiting for a permit waits in Redis, never in a worker's
memory or slot, and a capped node never starves the uncapped ones of the same worker.

Per key, in one hash slot (so the Lua script below runs on a cluster too):

* ``nn:limit:{openai}`` (hash): ``max_concurrency`` and ``rate`` as set at run time by
  :meth:`Limits.set` (they win over the defaults in code), and the rate's token bucket
  (``tokens``, ``at``);
* ``nn:limit:{openai}:permits`` (sorted set): one member per permit held, scored by its lease
  expiry (ms). The holder renews its permits every heartbeat; a SIGKILLed worker's permits
  expire after the visibility timeout and are pruned by the next taker, so the cap holds
  throughout (a permit is only ever granted while fewer than the cap are live) and nothing leaks.

Rates are a token bucket refilled continuously at ``N`` per second or minute and holding at most
``burst`` tokens (default 1): starts are paced evenly, and any window of ``T`` seconds sees at
most ``N * T / period + burst`` starts. Why Lua and not a ready-made limiter: the grant must
read the cap, prune expired permits, count, refill and take tokens atomically, and no Redis
client library ships that for plain Redis (Redis Stack modules are out of bounds).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .transport import as_text

if TYPE_CHECKING:
    from .pool import Pool

#: KEYS: limit hash, permits zset. ARGV: now ms, lease expiry ms, default cap (-1: none),
#: default rate per ms (-1: none), default burst, then the member names to grant (as many as
#: wanted). Each setting is the one set at run time, else the one a worker declared from code
#: (``code_*``: a worker serving only one of the task types sharing a key may not know the
#: limit another declares), else the caller's. Returns {granted, ms until a rate token is due
#: (0 if none is missing)}.
ACQUIRE = """
local now = tonumber(ARGV[1])
local function setting(name, default)
  return tonumber(redis.call('HGET', KEYS[1], name)
    or redis.call('HGET', KEYS[1], 'code_' .. name) or default)
end
local cap = setting('max_concurrency', ARGV[3])
local rate = setting('rate', ARGV[4])
local burst = setting('burst', ARGV[5])
local want = #ARGV - 5
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if cap >= 0 then
  want = math.min(want, cap - redis.call('ZCARD', KEYS[2]))
end
local wait = 0
if rate > 0 and want > 0 then
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
  local at = tonumber(redis.call('HGET', KEYS[1], 'at') or now)
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local whole = math.floor(tokens)
  if whole < want then
    want = whole
  end
  if want < 1 then
    wait = math.ceil((1 - tokens) / rate)
  end
  tokens = tokens - math.max(want, 0)
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
elseif rate == 0 then
  want = 0
  wait = 1000
end
if want < 1 then
  return {0, wait}
end
for i = 1, want do
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5 + i])
end
return {want, 0}
"""

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PERIODS |= {"h": 3600, "hour": 3600}


def parse_rate(rate: str) -> float:
    """``"10/s"``, ``"600/min"``, ``"1000/h"`` as starts per millisecond."""
    match = _RATE.match(rate)
    if match is None:
        raise ConfigurationError(
            f"rate limit {rate!r} is not COUNT/PERIOD; e.g. '10/s', '600/min' or '1000/h'"
        )
    count, period = float(match.group(1)), _PERIODS[match.group(2)]
    return count / (period * 1000.0)


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """The limit a task type runs under, as declared in code (``add_node(..., metadata=...)``,
    ``distribute(nodes=...)``); values set with :meth:`Limits.set` win over these."""

    key: str
    """Limit key: task types naming the same key share one cap and one rate budget."""
    max_concurrency: int | None = None
    """At most this many of the key's tasks run at once across the deployment."""
    rate_limit: str | None = None
    """At most this many starts per period (``"10/s"``, ``"600/min"``)."""
    burst: int = 1
    """Starts the rate allows at once after a quiet spell."""

    def __post_init__(self) -> None:
        if not self.key or any(c in self.key for c in "{}\n\r\t "):
            raise ConfigurationError(f"limit key {self.key!r} may not contain braces or spaces")
        if self.max_concurrency is not None and self.max_concurrency < 0:
            raise ConfigurationError("max_concurrency must be 0 or more")
        if self.rate_limit is not None:
            parse_rate(self.rate_limit)
        if self.burst < 1:
            raise ConfigurationError("burst must be at least 1")

    def script_defaults(self) -> tuple[int, float, int]:
        cap = -1 if self.max_concurrency is None else self.max_concurrency
        rate = -1.0 if self.rate_limit is None else parse_rate(self.rate_limit)
        return cap, rate, self.burst


def merged(declared: list[TaskLimits]) -> TaskLimits:
    """One key's limits as several task types declare them: the strictest of each."""
    caps = [d.max_concurrency for d in declared if d.max_concurrency is not None]
    rates = [d.rate_limit for d in declared if d.rate_limit is not None]
    return TaskLimits(
        key=declared[0].key,
        max_concurrency=min(caps) if caps else None,
        rate_limit=min(rates, key=parse_rate) if rates else None,
        burst=min(d.burst for d in declared),
    )


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit key as the status view shows it."""

    key: str
    """The limit key."""
    in_use: int
    """Permits held now (tasks of the key running)."""
    max_concurrency: int | None
    """The cap in force: set at run time, else declared in code by a worker."""
    rate_limit: str | None
    """The rate in force, likewise."""
    tokens: float | None
    """Starts the rate allows right now (None without a rate)."""


def _settings(
    prefix: str, max_concurrency: int | None, rate_limit: str | None, burst: int | None
) -> dict[str, str]:
    """A limit key's hash fields for the values given (``None``: leave the field as it is):
    unprefixed as set at run time, ``code_`` as declared in code (the grant script reads both)."""
    fields: dict[str, str] = {}
    if max_concurrency is not None:
        fields[f"{prefix}max_concurrency"] = str(max_concurrency)
    if rate_limit is not None:
        fields[f"{prefix}rate"] = repr(parse_rate(rate_limit))
        fields[f"{prefix}rate_text"] = rate_limit
    if burst is not None:
        fields[f"{prefix}burst"] = str(burst)
    return fields


class Limits:
    """The limits of one pool's namespace: ``pool.limits``."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._script: Any = None

    async def set(
        self,
        key: str,
        *,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        burst: int | None = None,
    ) -> None:
        """Set (or change, at run time) the limits of ``key`` for every process at once.

        They win over limits declared in code for the same key. ``None`` leaves a value as it
        is; :meth:`clear` removes what was set here.
        """
        TaskLimits(key, max_concurrency, rate_limit, burst or 1)  # validates
        await self._pool.ensure_started()
        fields = _settings("", max_concurrency, rate_limit, burst)
        keys = self._pool.keys
        if fields:
            await self._pool.transport.redis.hset(keys.limit(key), mapping=fields)  # type: ignore[arg-type]
        await self._pool.transport.redis.sadd(keys.limit_keys, key)

    async def clear(self, key: str) -> None:
        """Back to the limits declared in code."""
        await self._pool.ensure_started()
        fields = ("max_concurrency", "rate", "rate_text", "burst")
        await self._pool.transport.redis.hdel(self._pool.keys.limit(key), *fields)

    async def status(self) -> list[LimitStatus]:
        """Every key some worker or :meth:`set` declared."""
        await self._pool.ensure_started()
        redis, keys = self._pool.transport.redis, self._pool.keys
        names = sorted(as_text(k) for k in await redis.smembers(keys.limit_keys))
        now_ms = int(time.time() * 1000)
        result = []
        for name in names:
            config = {
                as_text(k): as_text(v) for k, v in (await redis.hgetall(keys.limit(name))).items()
            }
            in_use = int(await redis.zcount(keys.permits(name), now_ms, "+inf"))
            cap = config.get("max_concurrency") or config.get("code_max_concurrency") or None
            tokens = config.get("tokens")
            result.append(
                LimitStatus(
                    key=name,
                    in_use=in_use,
                    max_concurrency=int(cap) if cap is not None else None,
                    rate_limit=config.get("rate_text") or config.get("code_rate_text") or None,
                    tokens=float(tokens) if tokens is not None else None,
                )
            )
        return result

    async def declare(self, limits: TaskLimits) -> None:
        """Publish a limit declared in code (a worker serving it) for every process and for
        the status view. Only what it declares: a task type that merely names the key must
        not erase the cap another one declares."""
        keys, redis = self._pool.keys, self._pool.transport.redis
        declared = _settings("code_", limits.max_concurrency, limits.rate_limit, limits.burst)
        await redis.hset(keys.limit(limits.key), mapping=declared)  # type: ignore[arg-type]
        await redis.sadd(keys.limit_keys, limits.key)

    async def acquire(
        self, limits: TaskLimits, members: list[str], lease_ms: int
    ) -> tuple[int, float]:
        """Take up to ``len(members)`` permits (the first ones of ``members`` are granted).

        Returns how many were granted and, when the rate allowed none, seconds until it will.
        """
        if self._script is None:
            self._script = self._pool.transport.redis.register_script(ACQUIRE)
        keys = self._pool.keys
        now_ms = int(time.time() * 1000)
        cap, rate, burst = limits.script_defaults()
        granted, wait_ms = await self._script(
            keys=[keys.limit(limits.key), keys.permits(limits.key)],
            args=[now_ms, now_ms + lease_ms, cap, repr(rate), burst, *members],
        )
        return int(granted), int(wait_ms) / 1000.0
