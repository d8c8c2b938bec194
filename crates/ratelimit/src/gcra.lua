-- GCRA over the three limits of one request, atomically (see src/gcra.rs for the arithmetic), in one
-- Redis hash per hash tag (an organisation, or an anonymous caller's network): docs/decisions/0093.
-- KEYS[1]: the hash. Its fields: one TAT (microseconds) per limit and principal, and `x`, the
--   hash's expiry time (microseconds, the same clock) as last set, so that PEXPIRE runs only when
--   the expiry must move.
-- ARGV[1]: the time in microseconds, or "" to take it from Redis TIME (production always does).
-- ARGV[3k-1], ARGV[3k], ARGV[3k+1] (k = 1..3): field, emission interval and tolerance of limit k,
--   in microseconds.
-- Returns {allowed, now, tat1, tat2, tat3}: for an allowed request the new TATs, for a denied one
-- the TATs as they stand (at least `now`); the client derives the rest (src/redis.rs).
local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = time[1] * 1000000 + time[2]
else
  now = tonumber(ARGV[1])
end
local key = KEYS[1]
local f1, f2, f3 = ARGV[2], ARGV[5], ARGV[8]
local e1, e2, e3 = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[9])
local l1, l2, l3 = tonumber(ARGV[4]), tonumber(ARGV[7]), tonumber(ARGV[10])
local stored = redis.call('HMGET', key, f1, f2, f3, 'x')
-- A missing field reads as false, which tonumber turns into nil: a fresh bucket. A TAT in the past
-- is a full bucket, the same as a missing one.
local t1 = tonumber(stored[1]) or now
local t2 = tonumber(stored[2]) or now
local t3 = tonumber(stored[3]) or now
if t1 < now then t1 = now end
if t2 < now then t2 = now end
if t3 < now then t3 = now end
if t1 - now > l1 or t2 - now > l2 or t3 - now > l3 then
  return {0, now, t1, t2, t3}
end
t1, t2, t3 = t1 + e1, t2 + e2, t3 + e3
-- The hash must live until its latest TAT (afterwards every bucket is full anyway).
local latest = math.max(t1, t2, t3)
local deadline = tonumber(stored[4])
if deadline and deadline >= latest then
  -- Numbers reach Redis as exact integers (below 2^53).
  redis.call('HSET', key, f1, t1, f2, t2, f3, t3)
  return {1, now, t1, t2, t3}
end
-- Move the expiry past what is needed by an eighth of the longest period, so that a busy hash
-- moves it about eight times per period instead of on every request; never beyond one period
-- from now, the longest any TAT can be ahead.
local period = math.max(e1 + l1, e2 + l2, e3 + l3)
deadline = math.min(latest + math.floor(period / 8), now + period)
redis.call('HSET', key, f1, t1, f2, t2, f3, t3, 'x', deadline)
redis.call('PEXPIRE', key, math.ceil((deadline - now) / 1000))
-- The hash outlives the principals that went idle while others keep it alive: drop the fields
-- whose TAT has passed (their buckets are full, the same as absent), a bounded step at a time
-- (the cursor is kept in `k`), only here and only in a hash that holds several principals.
if redis.call('HLEN', key) > 8 then
  local scan = redis.call('HSCAN', key, redis.call('HGET', key, 'k') or '0', 'COUNT', 32)
  local entries, stale = scan[2], {}
  for i = 1, #entries, 2 do
    local field = entries[i]
    if field ~= 'x' and field ~= 'k' and tonumber(entries[i + 1]) <= now then
      stale[#stale + 1] = field
    end
  end
  if #stale > 0 then
    redis.call('HDEL', key, unpack(stale))
  end
  redis.call('HSET', key, 'k', scan[1])
end
return {1, now, t1, t2, t3}
