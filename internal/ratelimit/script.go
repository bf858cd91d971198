package ratelimit

import "github.com/redis/go-redis/v9"

// checkScript is the whole check of a call, one round trip:
//
//	KEYS[1] the tenant's policy version, KEYS[2] the host's cooldown,
//	then per policy i (4 keys): cooldown, GCRA tat, semaphore, reservation.
//	ARGV[1] the version the caller's policies are cached under, ARGV[2] the
//	number of policies, ARGV[3] the holder id, ARGV[4] the hold (ms), ARGV[5]
//	how soon to look again when the semaphore is full (ms), then per policy
//	(3 values): emission interval T (ms, 0: no rate), tolerance tau =
//	(burst-1)*T (ms), max in flight (0: no cap).
//
// It returns {0, version} when the caller's policies are stale (nothing
// touched), {1} when the call may go (its slots taken), or {2, until ms,
// cause, policy index (0: the host)} when it must wait. A call that must
// wait for rate reserves its slot (the tat moves on and a reservation key
// for the attempt is set), so the attempt finds its slot free when it comes
// back instead of racing everyone woken at the same time. A reservation used
// later than its slot plus one interval and the burst tolerance is dropped
// (the call takes a new slot), so that calls delayed together do not go
// out together.
var checkScript = redis.NewScript(`
local ver = redis.call('GET', KEYS[1]) or ''
if ver ~= ARGV[1] then return {0, ver} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
local holder = ARGV[3]
local hold = tonumber(ARGV[4])
local poll = tonumber(ARGV[5])

local cd, cdi = 0, -1
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
if v > now then cd, cdi = v, 0 end
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[2 + (i-1)*4 + 1]) or '0')
  if c > now and c > cd then cd, cdi = c, i end
end
if cd > 0 then return {2, tostring(cd), 'cooldown', cdi} end

for i = 1, n do
  local sem = KEYS[2 + (i-1)*4 + 3]
  local max = tonumber(ARGV[5 + (i-1)*3 + 3])
  if max > 0 then
    redis.call('ZREMRANGEBYSCORE', sem, '-inf', now)
    if not redis.call('ZSCORE', sem, holder) and redis.call('ZCARD', sem) >= max then
      local first = redis.call('ZRANGE', sem, 0, 0, 'WITHSCORES')
      local at = now + poll
      if first[2] and tonumber(first[2]) < at then at = tonumber(first[2]) end
      return {2, tostring(at), 'concurrency', i}
    end
  end
end

local wait, wi = 0, -1
local waits, held = {}, {}
for i = 1, n do
  local k = 2 + (i-1)*4
  local T = tonumber(ARGV[5 + (i-1)*3 + 1])
  local tau = tonumber(ARGV[5 + (i-1)*3 + 2])
  waits[i] = 0
  local r = redis.call('GET', KEYS[k+4])
  held[i] = r ~= false
  if held[i] and tonumber(r) + T + tau < now then
    -- Used late (its worker was slow): its slot is gone. Going now could
    -- bunch late calls into a burst; it takes a new slot instead.
    redis.call('DEL', KEYS[k+4])
    held[i] = false
  end
  local at = 0
  if held[i] then
    at = tonumber(r)
  elseif T > 0 then
    local tat = tonumber(redis.call('GET', KEYS[k+2]) or '0')
    if tat < now then tat = now end
    at = tat - tau
  end
  if at > now then
    waits[i] = at
    if at > wait then wait, wi = at, i end
  end
end
if wait > 0 then
  for i = 1, n do
    local k = 2 + (i-1)*4
    local T = tonumber(ARGV[5 + (i-1)*3 + 1])
    local tau = tonumber(ARGV[5 + (i-1)*3 + 2])
    if waits[i] > 0 and not held[i] then
      local tat = tonumber(redis.call('GET', KEYS[k+2]) or '0')
      if tat < now then tat = now end
      tat = tat + T
      redis.call('SET', KEYS[k+2], tostring(tat), 'PX', tat - now + tau + 1000)
      redis.call('SET', KEYS[k+4], tostring(waits[i]), 'PX', wait - now + 60000)
    elseif held[i] then
      redis.call('PEXPIRE', KEYS[k+4], wait - now + 60000)
    end
  end
  return {2, tostring(wait), 'rate', wi}
end

for i = 1, n do
  local k = 2 + (i-1)*4
  local T = tonumber(ARGV[5 + (i-1)*3 + 1])
  local tau = tonumber(ARGV[5 + (i-1)*3 + 2])
  local max = tonumber(ARGV[5 + (i-1)*3 + 3])
  if T > 0 then
    if redis.call('DEL', KEYS[k+4]) == 0 then
      local tat = tonumber(redis.call('GET', KEYS[k+2]) or '0')
      if tat < now then tat = now end
      tat = tat + T
      redis.call('SET', KEYS[k+2], tostring(tat), 'PX', tat - now + tau + 1000)
    end
  end
  if max > 0 then
    redis.call('ZADD', KEYS[k+3], now + hold, holder)
    redis.call('PEXPIRE', KEYS[k+3], hold + 1000)
  end
end
return {1}
`)

// cooldownScript moves each key's cooldown to ARGV[1] (Unix ms) unless it
// already ends later: KEYS are cooldown keys. ARGV[2] is the key's TTL (ms).
var cooldownScript = redis.NewScript(`
for i = 1, #KEYS do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if c < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
end
return 1
`)
