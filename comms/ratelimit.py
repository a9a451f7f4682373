"""One rate limit for the whole fleet: a token bucket per provider config in Redis.

The bucket lives in one Redis hash and is updated by one Lua script, so every
worker process on every host draws from the same tokens and no 1-second window
ever sees more than rate + burst sends. A send that finds no token is given a
retry slot instead: the bucket also keeps the next free slot time, so deferred
sends come back spread out at the configured rate rather than all at once. Its
task is re-published with that countdown; nothing sleeps in a worker.

Throttling answers from the provider halve the bucket's rate factor
(multiplicative decrease); the factor then grows back by ``RECOVERY_PER_SECOND``
(additive increase) up to the configured rate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache

import redis

from comms.endpoints import broker_url

#: the furthest ahead a retry slot is handed out; later sends are told to come back then
RESERVATION_HORIZON = 60.0
RECOVERY_PER_SECOND = 0.05
MIN_FACTOR = 0.05

_ACQUIRE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local horizon, recovery = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'factor', 'next_slot')
local tokens, ts, factor, next_slot = tonumber(b[1]), tonumber(b[2]), tonumber(b[3]), tonumber(b[4])
if tokens == nil then tokens = burst; ts = now end
if factor == nil then factor = 1 end
if next_slot == nil then next_slot = now end
local elapsed = math.max(0, now - ts)
factor = math.min(1, factor + elapsed * recovery)
local effective = rate * factor
tokens = math.min(burst, tokens + elapsed * effective)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  local slot = math.max(next_slot, now + (1 - tokens) / effective)
  wait = slot - now
  if wait <= horizon then
    next_slot = slot + 1 / effective
  else
    wait = horizon
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now),
           'factor', tostring(factor), 'next_slot', tostring(next_slot))
redis.call('EXPIRE', KEYS[1], math.ceil(horizon + burst / effective) + 60)
return tostring(wait)
"""

_SLOW_DOWN = """
local b = redis.call('HGET', KEYS[1], 'factor')
local factor = tonumber(b) or 1
factor = math.max(tonumber(ARGV[1]), factor / 2)
redis.call('HSET', KEYS[1], 'factor', tostring(factor))
return tostring(factor)
"""


_TRY_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local taken = 0
if tokens >= 1 then tokens = tokens - 1; taken = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return taken
"""


@dataclass(frozen=True)
class Grant:
    """``wait`` 0: send now. Otherwise come back in ``wait`` seconds (a retry slot)."""

    wait: float


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(broker_url())


def reset_client() -> None:
    if _client.cache_info().currsize:
        _client().close()
    _client.cache_clear()


class RateLimiter:
    def __init__(self, client: redis.Redis | None = None) -> None:
        self.redis = client or _client()
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._slow_down = self.redis.register_script(_SLOW_DOWN)
        self._try_take = self.redis.register_script(_TRY_TAKE)

    def try_take(self, key: str, rate: float, burst: float) -> bool:
        """A token from the bucket ``key`` now, or False (no reservation: the caller refuses)."""
        taken = self._try_take(keys=[f"comms:rl:{key}"], args=[rate, max(burst, 1.0)])
        return bool(int(taken))

    @staticmethod
    def bucket_key(config_id: uuid.UUID) -> str:
        return f"comms:rl:{config_id}"

    def acquire(self, config_id: uuid.UUID, rate: float, burst: float) -> Grant:
        """A token for one send through ``config_id``, or when to try again."""
        wait = self._acquire(
            keys=[self.bucket_key(config_id)],
            args=[rate, max(burst, 1.0), RESERVATION_HORIZON, RECOVERY_PER_SECOND],
        )
        return Grant(wait=float(wait))

    def slow_down(self, config_id: uuid.UUID) -> float:
        """The provider said 'too fast': halve the rate for a while. Returns the new factor."""
        return float(self._slow_down(keys=[self.bucket_key(config_id)], args=[MIN_FACTOR]))
