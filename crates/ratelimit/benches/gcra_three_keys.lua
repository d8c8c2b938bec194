-- GCRA over every limit of one request, atomically (see src/gcra.rs for the arithmetic).
-- KEYS: one key per limit, all with the same hash tag.
-- ARGV[1]: the time in microseconds, or "" to take it from Redis TIME (production always does).
-- ARGV[2k], ARGV[2k+1]: emission interval and tolerance of KEYS[k], in microseconds.
-- Returns {allowed, index of the limit that speaks, remaining, reset-after us, retry-after us, now us,
-- then the remaining of each limit in KEYS order} (the fallback continues quotas from them).
local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = time[1] * 1000000 + time[2]
else
  now = tonumber(ARGV[1])
end
local count = #KEYS
-- A missing key reads as false, which tonumber turns into nil: a fresh bucket.
local tats = redis.call('MGET', unpack(KEYS))
local denied, denied_retry = 0, 0
for i = 1, count do
  local tat = tonumber(tats[i]) or now
  if tat < now then tat = now end
  tats[i] = tat
  local wait = tat - now - ARGV[2 * i + 1]
  if wait > 0 and (denied == 0 or wait > denied_retry) then
    denied = i
    denied_retry = wait
  end
end
if denied > 0 then
  local reply = {0, denied, 0, tats[denied] - now, denied_retry, now}
  for i = 1, count do
    -- Requests that would pass now (nothing was consumed).
    local backlog, tolerance = tats[i] - now, tonumber(ARGV[2 * i + 1])
    if backlog > tolerance then
      reply[6 + i] = 0
    else
      reply[6 + i] = math.floor((tolerance - backlog) / tonumber(ARGV[2 * i])) + 1
    end
  end
  return reply
end
local each = {}
local best, best_remaining, best_reset = 0, 0, 0
for i = 1, count do
  local emission = tonumber(ARGV[2 * i])
  local backlog = tats[i] - now
  local reset = backlog + emission
  -- %d keeps all 16 digits of a microsecond time (tostring would round it).
  redis.call('SET', KEYS[i], string.format('%d', tats[i] + emission), 'PX', math.ceil(reset / 1000))
  local remaining = math.floor((ARGV[2 * i + 1] - backlog) / emission)
  each[i] = remaining
  if best == 0 or remaining < best_remaining or (remaining == best_remaining and reset > best_reset) then
    best, best_remaining, best_reset = i, remaining, reset
  end
end
local reply = {1, best, best_remaining, best_reset, 0, now}
for i = 1, count do
  reply[6 + i] = each[i]
end
return reply
