"""The Redis side of the cluster GPU books (cluster_gpu.py): one Lua script, one round trip.

Per pool, Redis holds the pool's running integral (the same `acc`, total weight, busy
time as PoolAccount, plus idle time and the start), the weight-change events replicas
have sent but that are not integrated yet (a sorted set by time), and one record per
replica (its watermark, last contact, weight and requests in flight, the GPU-seconds
its weight earned, what it has finalised). A call from replica `rid`:

1. deletes the marks it acknowledges; adds its batch of events unless this batch's
   sequence number was applied already (a retried batch is a no-op: exactly once);
2. raises its watermark (every event it will ever send is later than that);
3. releases replicas silent for longer than the lease (SIGKILL, a lost host): a release
   event at their watermark removes their weight and in-flight count, and the GPU-seconds
   their requests held that no UsageEvent will carry are booked as `orphan`;
4. integrates every event up to the lowest live watermark, in time order, writing for
   each the value of `acc` at that instant (a "mark") for the replica that sent it; the
   time between events is busy (weight in flight) or idle, each counted once;
5. answers the caller's marks, its parts of the books (busy GPU-seconds its weight
   earned, plus a dead replica's unreported part it adopted; idle GPU-seconds its calls
   integrated) and the pool's totals.

Replica records are strings of numbers; floats cross the Lua boundary as strings (Lua
numbers would be truncated to integers). The marks keys of other replicas are derived
inside the script, so this targets a single Redis (not Redis Cluster), as the state store.
"""

from __future__ import annotations

from typing import Final

# KEYS: pool hash, events zset, replicas hash, caller's seq key, marks-key prefix.
# ARGV: rid, seq, watermark, lease_s, gpus, done, seq_ttl, leave, n_ack, eid*, n_ev,
#       (t, eid, dw, dn)*
SYNC: Final[str] = r"""
local rid = ARGV[1]
local seq = tonumber(ARGV[2])
local wm = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local gpus = tonumber(ARGV[5])
local done = tonumber(ARGV[6])
local seq_ttl = tonumber(ARGV[7])
local leave = tonumber(ARGV[8])
local tm = redis.call('TIME')
local now = tonumber(tm[1]) + tonumber(tm[2]) / 1e6
local function fmt(x) return string.format('%.17g', x) end
local mkey = KEYS[5] .. rid
local i = 9
local nack = tonumber(ARGV[i]); i = i + 1
local j = 0
while j < nack do
  local m = math.min(nack - j, 500)
  redis.call('HDEL', mkey, unpack(ARGV, i + j, i + j + m - 1))
  j = j + m
end
i = i + nack
local nev = tonumber(ARGV[i]); i = i + 1

-- the pool
local P = {}
local raw = redis.call('HGETALL', KEYS[1])
for k = 1, #raw, 2 do P[raw[k]] = tonumber(raw[k + 1]) end
if P.last == nil then
  local start = wm
  for k = 0, nev - 1 do
    local t = tonumber(ARGV[i + 4 * k])
    if t < start then start = t end
  end
  P = {acc = 0, tw = 0, n = 0, busy = 0, idle = 0, last = start, started = start,
       contact = now, orphan = 0}
end

-- replicas: wm, seen, w, n, gs, mark, done, ci, adopt, ret, gone
local FIELDS = {'wm', 'seen', 'w', 'n', 'gs', 'mark', 'done', 'ci', 'adopt', 'ret', 'gone'}
local rep = {}
raw = redis.call('HGETALL', KEYS[3])
for k = 1, #raw, 2 do
  local x = {}
  local f = 1
  for v in string.gmatch(raw[k + 1], '[^,]+') do x[FIELDS[f]] = tonumber(v); f = f + 1 end
  rep[raw[k]] = x
end
local me = rep[rid]
if me ~= nil and me.gone ~= 0 then
  return {'released'}
end
if me == nil then
  me = {wm = wm, seen = now, w = 0, n = 0, gs = 0, mark = P.acc, done = 0, ci = 0,
        adopt = 0, ret = 0, gone = 0}
  rep[rid] = me
end
-- After a store outage (nobody reached it for half a lease) every replica gets a new
-- lease: they could not renew theirs while it was away.
if now - P.contact > lease / 2 then
  for _, x in pairs(rep) do x.seen = now end
end
P.contact = now
me.seen = now
me.done = done

local last_seq = tonumber(redis.call('GET', KEYS[4]) or '0')
if seq > last_seq then
  for k = 0, nev - 1 do
    local b = i + 4 * k
    local member = rid .. '|' .. ARGV[b + 1] .. '|' .. ARGV[b + 2] .. '|' .. ARGV[b + 3]
    redis.call('ZADD', KEYS[2], ARGV[b], member)
  end
  redis.call('SET', KEYS[4], seq, 'EX', seq_ttl)
end
if wm > me.wm then me.wm = wm end
if leave == 1 then me.seen = now - 2 * lease end  -- a graceful stop: released at once

-- release the silent
for r, x in pairs(rep) do
  if x.gone == 0 and now - x.seen > lease then
    x.gone = 2  -- release pending: its event is integrated below
    redis.call('ZADD', KEYS[2], fmt(x.wm), r .. '|~release|0|0')
  elseif x.gone == 1 and now - x.seen > 86400 then
    rep[r] = nil
    redis.call('HDEL', KEYS[3], r)
  end
end
local gwm = nil
for _, x in pairs(rep) do
  if x.gone == 0 and (gwm == nil or x.wm < gwm) then gwm = x.wm end
end
if gwm == nil then  -- every replica has left: integrate up to the last of them
  gwm = me.wm
  for _, x in pairs(rep) do
    if x.gone == 2 and x.wm > gwm then gwm = x.wm end
  end
end

local function advance(t)
  local dt = t - P.last
  if dt > 0 then
    if P.tw > 0 then
      P.acc = P.acc + gpus * dt / P.tw
      P.busy = P.busy + dt
    else
      P.idle = P.idle + dt
      me.ci = me.ci + gpus * dt
    end
    P.last = t
  end
end
local function settle(x)
  x.gs = x.gs + x.w * (P.acc - x.mark)
  x.mark = P.acc
end

local evs = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', fmt(gwm), 'WITHSCORES')
for k = 1, #evs, 2 do
  advance(tonumber(evs[k + 1]))
  local r, eid, dw, dn = string.match(evs[k], '^(.*)|([^|]*)|([^|]*)|([^|]*)$')
  local x = rep[r]
  if x ~= nil then
    settle(x)
    if eid == '~release' then
      P.tw = P.tw - x.w
      P.n = P.n - x.n
      local orphan = x.gs - x.done
      if orphan > 0 then P.orphan = P.orphan + orphan end
      me.adopt = me.adopt + (x.gs - x.ret)
      x.ret = x.gs
      x.w = 0; x.n = 0; x.gone = 1
      redis.call('DEL', KEYS[5] .. r)
    else
      dw = tonumber(dw); dn = tonumber(dn)
      x.w = x.w + dw; x.n = x.n + dn
      if x.w < 1e-12 then x.w = 0 end
      P.tw = P.tw + dw; P.n = P.n + dn
      if P.n < 0 then P.n = 0 end  -- a start lost with the store's data (no persistence)
      if x.n < 0 then x.n = 0 end
      redis.call('HSET', KEYS[5] .. r, eid, fmt(P.acc))
    end
    if P.tw < 1e-12 then P.tw = 0 end
  end
end
if #evs > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(gwm)) end
advance(gwm)
settle(me)
me.ret = me.gs

local out = {}
for k, v in pairs(P) do out[#out + 1] = k; out[#out + 1] = fmt(v) end
redis.call('HSET', KEYS[1], unpack(out))
local live = 0
for r, x in pairs(rep) do
  if x.gone == 0 then live = live + 1 end
  local vals = {}
  for f = 1, #FIELDS do vals[f] = fmt(x[FIELDS[f]]) end
  redis.call('HSET', KEYS[3], r, table.concat(vals, ','))
end
return {'ok', redis.call('HGETALL', mkey), fmt(me.gs + me.adopt), fmt(me.ci),
        fmt(P.busy), fmt(P.idle), fmt(P.started), fmt(P.last), fmt(P.n), fmt(P.orphan),
        tostring(live)}
"""
