"""One rate limit for the whole fleet: a token bucket per provider config in Redis.

The bucket lives in one Redis hash and is updated by one Lua script, so every
worker process on every host draws from the same tokens. A send that finds no
token *reserves* the next free slot (the bucket goes into debt) and is told how
long to wait; its task is re-published with that countdown and, when it comes
back, uses its reservation instead of drawing again. Nothing sleeps in a worker.

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

#: how far ahead a send may reserve a slot; later than this it is deferred unreserved
RESERVATION_HORIZON = 60.0
RECOVERY_PER_SECOND = 0.05
MIN_FACTOR = 0.05

_ACQUIRE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local horizon, recovery = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'factor')
local tokens, ts, factor = tonumber(b[1]), tonumber(b[2]), tonumber(b[3])
if tokens == nil then tokens = burst; ts = now end
if factor == nil then factor = 1 end
local elapsed = math.max(0, now - ts)
factor = math.min(1, factor + elapsed * recovery)
local effective = rate * factor
tokens = math.min(burst, tokens + elapsed * effective)
local wait = 0
local reserved = 1
if tokens < 1 then
  wait = (1 - tokens) / effective
  if wait > horizon then reserved = 0 end
end
if reserved == 1 then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now),
           'factor', tostring(factor))
redis.call('EXPIRE', KEYS[1], math.ceil(horizon + burst / effective) + 60)
return {reserved, tostring(wait)}
"""

_SLOW_DOWN = """
local b = redis.call('HGET', KEYS[1], 'factor')
local factor = tonumber(b) or 1
factor = math.max(tonumber(ARGV[1]), factor / 2)
redis.call('HSET', KEYS[1], 'factor', tostring(factor))
return tostring(factor)
"""


@dataclass(frozen=True)
class Grant:
    """``wait`` 0: send now. Otherwise wait that long; ``reserved`` says a slot is held."""

    wait: float
    reserved: bool


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

    @staticmethod
    def bucket_key(config_id: uuid.UUID) -> str:
        return f"comms:rl:{config_id}"

    @staticmethod
    def reservation_key(delivery_id: uuid.UUID) -> str:
        return f"comms:rl:resv:{delivery_id}"

    def acquire(
        self, config_id: uuid.UUID, delivery_id: uuid.UUID, rate: float, burst: float
    ) -> Grant:
        """A token for one send of ``delivery_id`` through ``config_id``."""
        if self.redis.delete(self.reservation_key(delivery_id)):
            return Grant(wait=0.0, reserved=True)  # this send waited for its slot already
        reserved, wait = self._acquire(
            keys=[self.bucket_key(config_id)],
            args=[rate, max(burst, 1.0), RESERVATION_HORIZON, RECOVERY_PER_SECOND],
        )
        grant = Grant(wait=float(wait), reserved=bool(int(reserved)))
        if grant.wait > 0 and grant.reserved:
            self.redis.set(
                self.reservation_key(delivery_id), 1, ex=int(grant.wait + RESERVATION_HORIZON)
            )
        return grant

    def slow_down(self, config_id: uuid.UUID) -> float:
        """The provider said 'too fast': halve the rate for a while. Returns the new factor."""
        return float(self._slow_down(keys=[self.bucket_key(config_id)], args=[MIN_FACTOR]))
