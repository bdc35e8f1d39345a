"""`redis://`: shared counters in Redis, one Lua round trip per sync.

Each replica flushes its batch with a sequence number of its own (random replica id,
`<prefix>:seq:<replica>` holds the last applied number). The script applies the batch
only if its number is newer, so a flush whose reply was lost (timeout, connection
cut after Redis applied it) is simply sent again: it is applied exactly once. The same
script sets rate-window expiries and reads back the counters the replica needs, so a
sync is one round trip and its answer already includes its own batch.

Counters are integers (nano-USD, requests, tokens) incremented with HINCRBY: sums are
exact whatever the order replicas flush in.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.state.base import Counts, Remote

# KEYS: [seq key, hash...]. ARGV: seq, seq ttl, n_ops, (key#, field, incr)*,
# n_expire, (key#, ttl)*, n_reads, (key#, n_fields, field*)*.
_SYNC = """
local seq = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
local applied = 0
if seq > last then
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  applied = 1
else
  i = i + 3 * n
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('EXPIRE', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  i = i + 2
end
local out = {applied}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = KEYS[tonumber(ARGV[i])]
  local nf = tonumber(ARGV[i + 1])
  i = i + 2
  local vals = {}
  local j = 0
  while j < nf do
    local m = math.min(nf - j, 500)
    local got = redis.call('HMGET', key, unpack(ARGV, i + j, i + j + m - 1))
    for k = 1, m do vals[j + k] = got[k] end
    j = j + m
  end
  out[#out + 1] = vals
  i = i + nf
end
return out
"""

# How long Redis remembers a replica's last sequence number: longer than any retry.
_SEQ_TTL_S = 7 * 24 * 3600


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisRemote(Remote):
    kind = "redis"

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        self._url = url
        self.replica = secrets.token_hex(8)
        self._seq_key = f"{prefix}:seq:{self.replica}"
        # No client-side retries: the store retries the same batch on its next tick.
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="hybridgate",
        )
        self._script = self.client.register_script(_SYNC)

    @property
    def display_url(self) -> str:
        return mask_url(self._url)

    async def apply(
        self, seq: int, ops: Counts, expire: dict[str, int], reads: dict[str, list[str]]
    ) -> Counts:
        keys = [self._seq_key]
        index: dict[str, int] = {}

        def idx(h: str) -> int:
            i = index.get(h)
            if i is None:
                keys.append(h)
                i = index[h] = len(keys)
            return i

        args: list[str | int] = [seq, _SEQ_TTL_S]
        triples: list[str | int] = []
        for h, fields in ops.items():
            i = idx(h)
            for f, n in fields.items():
                triples += (i, f, n)
        args.append(len(triples) // 3)
        args += triples
        args.append(len(expire))
        for h, ttl in expire.items():
            args += (idx(h), ttl)
        args.append(len(reads))
        for h, names in reads.items():
            args += (idx(h), len(names), *names)
        out = await self._script(keys=keys, args=args)
        result: Counts = {}
        for (h, names), vals in zip(reads.items(), out[1:], strict=True):
            result[h] = {
                f: int(v) if v is not None else 0 for f, v in zip(names, vals, strict=True)
            }
        return result

    async def read_hash(self, h: str) -> dict[str, int]:
        raw = await self.client.hgetall(h)
        return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}

    async def get_doc(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def put_doc(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.client.set(key, value, ex=max(1, ttl_s))

    async def delete_doc(self, key: str) -> bool:
        return bool(await self.client.delete(key))

    async def close(self) -> None:
        await self.client.aclose()
