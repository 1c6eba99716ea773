"""Each authenticated channel request's one Redis call: its channel's rate limit, then
its nonce.

    rl:{channel}             GCRA: the theoretical arrival time, µs of Redis's own clock
                             (one clock for every worker and host); expires when idle
    nonce:{channel}:{nonce}  SET NX EX 600, only for a request the limit let through

One Lua script does both, so the limit holds across the engine's prefork workers and
hosts at the cost of the one round trip the nonce already took. A channel may send
`burst` requests at once and `per_s` a second after that; a request over it is told
how long to wait (429, `Retry-After`), and its nonce is not spent.

Redis down: the limit is kept in-process instead, each worker allowing its share
(`per_s / workers`), so a worker's budget stays bounded; the nonce cannot be checked
here (the caller's shard-side check covers what moves money). Nothing of money
safety rests on this module: it bounds load, not outcomes. Memory is one small key
per active channel in Redis, and one float per channel in each process.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final, NamedTuple

from redis.exceptions import RedisError

from engine.runtime import metrics
from engine.stores.redis_wire import RedisWire, Script
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

NONCE_TTL_S: Final = 600
_US_PER_S: Final = 1_000_000

_ADMIT = Script(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return {string.format('%.0f', wait), 0} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1000)
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then return {'0', 1} end
return {'0', 0}
"""
)


class Admission(NamedTuple):
    retry_after_s: float  # 0: let through
    nonce_fresh: bool | None  # None: not checked (Redis unavailable, or refused first)


class _Rate(NamedTuple):
    interval_us: int
    tolerance_us: int


class ChannelGate:
    def __init__(
        self, redis: RedisWire, *, default_per_s: float, burst_s: float, workers: int
    ) -> None:
        assert default_per_s > 0 and burst_s > 0 and workers >= 1
        self._redis = redis
        self._default_per_s = default_per_s
        self._burst_s = burst_s
        self._workers = workers
        self._local_tat_us: dict[str, float] = {}  # bounded: one per known channel

    def _rate(self, channel: Channel, share: int = 1) -> _Rate:
        per_s = (channel.rate_limit_per_s or self._default_per_s) / share
        burst = max(1.0, per_s * self._burst_s)
        interval_us = max(1, round(_US_PER_S / per_s))
        return _Rate(interval_us, round((burst - 1) * interval_us))

    async def admit(self, channel: Channel, nonce: str) -> Admission:
        rate = self._rate(channel)
        keys = (f"rl:{channel.channel_id}", f"nonce:{channel.channel_id}:{nonce}")
        try:
            reply = await self._redis.run_script(
                _ADMIT, keys, (rate.interval_us, rate.tolerance_us, NONCE_TTL_S)
            )
        except (RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.inc()
            metrics.RATE_LIMIT_LOCAL.inc()
            log.warning(
                "rate limit kept in-process, nonce not checked in redis: redis unavailable",
                extra={"error": type(exc).__name__},
            )
            return Admission(self._admit_locally(channel), None)
        assert isinstance(reply, list) and len(reply) == 2, reply
        wait_us, fresh = reply
        assert isinstance(wait_us, bytes) and isinstance(fresh, int), reply
        if int(wait_us) > 0:
            return Admission(int(wait_us) / _US_PER_S, None)
        return Admission(0.0, bool(fresh))

    def _admit_locally(self, channel: Channel) -> float:
        """The same rule in this process, on this worker's share of the rate."""
        rate = self._rate(channel, share=self._workers)
        now_us = time.monotonic() * _US_PER_S
        tat = max(self._local_tat_us.get(channel.channel_id, now_us), now_us)
        wait_us = tat - now_us - rate.tolerance_us
        if wait_us > 0:
            return wait_us / _US_PER_S
        self._local_tat_us[channel.channel_id] = tat + rate.interval_us
        return 0.0


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, rounded up, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(wait_s)))
