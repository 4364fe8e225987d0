-- Write the 1-minute candles of ONE symbol into its rings; optionally return the rings.
--
-- Touches only the keys it is given, all hash-tagged by the symbol, so it runs on Redis Cluster.
-- Every write is a fixed-size SETRANGE into the slot of the candle's minute (O(1) per candle), and
-- writing the same candles again leaves the same bytes (idempotent; in any order for the rings, and
-- for the carried state as long as no minute is more than MARGIN minutes late: docs/state.md).
--
-- KEYS[1]  the 1-minute ring: CAPACITY slots of 8 little-endian float64 (layout.CANDLE_FIELDS)
-- KEYS[2]  the previous lap: slot i holds the quote volume of minute ring[i].open_time - CAPACITY
-- KEYS[3]  the rings' version: a counter bumped by every write, started from the server clock when
--          the rings are created (so a flushed and rebuilt symbol never repeats a version)
-- KEYS[4..] the bar rings (layout.BAR_RINGS order): slots of (tag, open, close) float64 in a ring that
--          keeps opens, (tag, close) in the others
-- KEYS[last - 1] the carried RSI and MACD state (layout.CARRY_*): CARRY_WIDTH float64, the newest minute
--          written (in minutes, 0 before the first), then per timeframe of CARRY_TFS the open minute
--          of the last bar taken in and the recursion state after it (bars, close, gain, loss, slow,
--          fast, signal: functions/calculator/carried.py, whose ``advance_bar`` this repeats bit for bit)
-- KEYS[last] the write log: the last LOG_ENTRIES writes of at most LOG_MAX_BYTES of candles (no
--          seeds), each the version after it (a float64) followed by its candles
-- CAPACITY, LOG_ENTRIES, LOG_MAX_BYTES and BAR_RINGS ({minutes, capacity, width} per bar ring, width
-- 3 or 2 float64 a slot) are prepended from state/layout.py, and so are MARGIN, CARRY_WIDTH, CARRY_TFS
-- ({minutes, bar ring index or 0 for bars of the 1-minute ring} per timeframe) and the recursions'
-- constants (RSI_PERIOD ... SIGNAL_KEEP, from functions/calculator/carried.py). A ring key of another length (an older layout) makes the script
-- drop the symbol's rings and start them anew (reported as created, so the caller rebuilds them).
-- ARGV[1]  the candles, packed like ring slots (64 bytes each); may be empty (a pure read)
-- ARGV[2]  the version of the rings the caller holds in memory ("-1": none); the reply is
--          {version after, created (1/0), rings...}, the rings left out when the caller's copy was
--          current before this call (it applies the same candles itself), and replaced by
--          {"log", entries...} when the write log holds every write the caller's copy lacks (it
--          applies those, then its own); "no" for no reply
-- ARGV[3]  closed bars to seed (Binance's native klines), 32 bytes each: 4 float64 (bar ring index
--          from 1, open time, open, close); merged as the bar's first and last minute, so a bar
--          built from stored minutes and its seed agree (a ring without opens drops the open)
-- ARGV[5]  the carried state to set before the candles are written (warm start: computed from the
--          whole stored history), or empty; when the rings are created without one, the state starts
--          at the first candle written
-- ARGV[4]  "create" (or absent): missing rings are created; "keep": missing rings are NOT created,
--          nothing is written and the reply is {0, 1} (0 with "no"). A caller that rebuilds missing
--          rings from PostgreSQL asks first with "keep": rings it created for a batch and then failed
--          to rebuild (killed in between) would look whole to the next write and never be rebuilt.

local MINUTE = 60000
local ROW = 64
local TAG_OFFSET = 4096
local TAG_MINUTE = 4096 * 4096
local cap = CAPACITY
local blob = ARGV[1]
local nan = 0 / 0

local FIRST_BAR = 3
local LOG = KEYS[#KEYS]
local CARRY = KEYS[#KEYS - 1]
local nbars = #KEYS - FIRST_BAR - 2
local bar_minutes, bar_cap, bar_width = {}, {}, {}
for b = 1, nbars do
  bar_minutes[b] = BAR_RINGS[b][1]
  bar_cap[b] = BAR_RINGS[b][2]
  bar_width[b] = BAR_RINGS[b][3]
end

-- Every ring's length, checked before anything is written (STRLEN is 0 for a missing key).
local sizes = {[1] = cap * ROW, [2] = cap * 8}
for b = 1, nbars do
  sizes[FIRST_BAR + b] = bar_cap[b] * bar_width[b] * 8
end
sizes[#KEYS - 1] = CARRY_WIDTH * 8
local lengths = {}
local stale = false
for i, bytes in pairs(sizes) do
  lengths[i] = redis.call('STRLEN', KEYS[i])
  if lengths[i] ~= 0 and lengths[i] ~= bytes then
    stale = true
  end
end
-- Rings without a carried state (written before it existed) cannot give exact RSI and MACD: rebuild.
if lengths[1] ~= 0 and lengths[#KEYS - 1] == 0 then
  stale = true
end
if stale then
  -- Rings written in another layout (before an upgrade). They are a cache of candles_1m and bars:
  -- start them anew, and the reply's created = 1 makes the caller rebuild them (warm start).
  for i, _ in pairs(sizes) do
    redis.call('DEL', KEYS[i])
    lengths[i] = 0
  end
  redis.call('DEL', LOG)
  redis.call('DEL', KEYS[3])
end

if lengths[1] == 0 and ARGV[4] == 'keep' then
  if ARGV[2] == 'no' then
    return 0
  end
  return {0, 1}
end

-- A ring is allocated once at its full size: SETRANGE never grows it (no realloc slack).
local function ensure(i, fill)
  if lengths[i] == 0 then
    redis.call('SET', KEYS[i], string.rep(fill, sizes[i] / #fill))
    return 1
  end
  return 0
end

local created = ensure(1, string.rep('\0', 8))
ensure(2, struct.pack('<d', nan))
if created == 1 or redis.call('EXISTS', KEYS[3]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[3], now[1] * 1000000 + now[2])
  redis.call('DEL', LOG)  -- its versions belong to the rings before
end
local version = tonumber(redis.call('GET', KEYS[3]))
for b = 1, nbars do
  ensure(FIRST_BAR + b, string.rep('\0', 8))
end
ensure(#KEYS - 1, string.rep('\0', 8))

-- The writes the caller's copy lacks, if the log holds every one of them (read before this write).
local known = tonumber(ARGV[2])
local missed = nil
if known ~= nil and known >= 0 and created == 0 and known < version then
  local found, expect = {}, known + 1
  for _, entry in ipairs(redis.call('LRANGE', LOG, 0, -1)) do
    local v = struct.unpack('<d', entry)
    if v == expect then
      found[#found + 1] = entry
      expect = expect + 1
    elseif v > known then
      found = nil  -- a write the log does not hold
      break
    end
  end
  if found ~= nil and expect == version + 1 then
    missed = found
  end
end

-- A slot is (tag, open, close) with width 3, (tag, close) with width 2: the open is dropped, but the
-- tag still tracks the earliest minute merged, so the bar's rules are the same in every ring.
local function merge_bar(key, span, capacity, width, minute, o, c)
  local open_minute = minute - minute % span
  local k = minute - open_minute
  local size = width * 8
  local at = (open_minute / span % capacity) * size
  local slot = redis.call('GETRANGE', key, at, at + size - 1)
  local tag = struct.unpack('<d', slot)
  local bar_open = o
  if width == 3 then
    bar_open = struct.unpack('<d', slot, 9)
  end
  local bar_close = struct.unpack('<d', slot, size - 7)
  local held = math.floor(tag / TAG_MINUTE)
  if held == open_minute then
    local rest = tag - held * TAG_MINUTE
    local first = math.floor(rest / TAG_OFFSET)
    local last = rest - first * TAG_OFFSET
    -- The earliest minute seen gives the open, the latest the close; a repeat rewrites the same.
    if k <= first then bar_open = o; first = k end
    if k >= last then bar_close = c; last = k end
    tag = held * TAG_MINUTE + first * TAG_OFFSET + last
  elseif held < open_minute then
    -- A newer bar takes over the slot; an older one (held > open_minute) keeps it.
    tag, bar_open, bar_close = open_minute * TAG_MINUTE + k * TAG_OFFSET + k, o, c
  else
    return
  end
  if width == 3 then
    redis.call('SETRANGE', key, at, struct.pack('<ddd', tag, bar_open, bar_close))
  else
    redis.call('SETRANGE', key, at, struct.pack('<dd', tag, bar_close))
  end
end

-- The carried state, read once and written back once if it moved.
local CARRY_FORMAT = '<' .. string.rep('d', CARRY_WIDTH)
local carry = {struct.unpack(CARRY_FORMAT, redis.call('GET', CARRY))}
carry[CARRY_WIDTH + 1] = nil  -- struct.unpack's next position
local carry_moved = false
if ARGV[5] ~= nil and #ARGV[5] > 0 then
  carry = {struct.unpack(CARRY_FORMAT, ARGV[5])}
  carry[CARRY_WIDTH + 1] = nil
  carry_moved = true
end

-- The close of the bar of `span` minutes opening at minute `b`, or nil when the rings lack it.
local function bar_close(span, ring, b)
  if ring == 0 then
    -- From the 1-minute ring: the latest minute of the bar that is stored closes it.
    for k = span - 1, 0, -1 do
      local at = ((b + k) % cap) * ROW
      local open_time, _, _, _, c = struct.unpack('<ddddd', redis.call('GETRANGE', KEYS[1], at, at + 39))
      if open_time == (b + k) * MINUTE then
        return c
      end
    end
    return nil
  end
  local size = bar_width[ring] * 8
  local at = (b / span % bar_cap[ring]) * size
  local slot = redis.call('GETRANGE', KEYS[FIRST_BAR + ring], at, at + size - 1)
  if math.floor(struct.unpack('<d', slot) / TAG_MINUTE) == b then
    return struct.unpack('<d', slot, size - 7)
  end
  return nil
end

-- One closed bar into the state at column o + 1 (bars) .. o + 7 (signal): carried.advance_bar.
local function advance_bar(o, close)
  local n = carry[o + 1]
  local change = close - carry[o + 2]
  local up, down = math.max(change, 0), -math.min(change, 0)
  local gain, loss, slow, fast, signal = carry[o + 3], carry[o + 4], carry[o + 5], carry[o + 6], carry[o + 7]
  if n >= STEADY_BARS then
    gain = RSI_GAIN * up + RSI_KEEP * gain
    loss = RSI_GAIN * down + RSI_KEEP * loss
    slow = K_SLOW * close + SLOW_KEEP * slow
    fast = K_FAST * close + FAST_KEEP * fast
    signal = K_SIGNAL * (fast - slow) + SIGNAL_KEEP * signal
  else
    -- The seeds, in TA-Lib's operations and order (carried.advance_one).
    if n > 0 then
      if n < RSI_PERIOD then
        gain = gain + up
        loss = loss + down
      elseif n == RSI_PERIOD then
        gain = (gain + up) / RSI_PERIOD
        loss = (loss + down) / RSI_PERIOD
      else
        gain = (gain * (RSI_PERIOD - 1) + up) / RSI_PERIOD
        loss = (loss * (RSI_PERIOD - 1) + down) / RSI_PERIOD
      end
    end
    if n < MACD_SLOW - 1 then
      slow = slow + close
      if n >= MACD_SLOW - MACD_FAST then
        fast = fast + close
      end
    elseif n == MACD_SLOW - 1 then
      slow = (slow + close) / MACD_SLOW
      fast = (fast + close) / MACD_FAST
    else
      slow = (close - slow) * K_SLOW + slow
      fast = (close - fast) * K_FAST + fast
    end
    if MACD_SLOW - 1 <= n and n < MACD_FIRST then
      signal = signal + (fast - slow)
    elseif n == MACD_FIRST then
      signal = (signal + (fast - slow)) / MACD_SIGNAL
    elseif n > MACD_FIRST then
      signal = ((fast - slow) - signal) * K_SIGNAL + signal
    end
  end
  carry[o + 1], carry[o + 2] = n + 1, close
  carry[o + 3], carry[o + 4], carry[o + 5], carry[o + 6], carry[o + 7] = gain, loss, slow, fast, signal
end

-- Before minute `minute` is written: take in every bar that closed MARGIN minutes before it (once,
-- keyed by the bar's open minute, so a repeated or older minute moves nothing).
local function advance_carry(minute)
  local newest = carry[1]
  if minute <= newest then
    return
  end
  for i, tf in ipairs(CARRY_TFS) do
    local span, ring = tf[1], tf[2]
    local o = 2 + (i - 1) * 8
    local target = math.floor((minute - MARGIN) / span) * span - span
    if newest > 0 and target > carry[o] then
      -- Bars after the newest minute written have no minute yet.
      for b = carry[o] + span, math.min(target, newest), span do
        local c = bar_close(span, ring, b)
        if c ~= nil then
          advance_bar(o, c)
        end
      end
    end
    if target > carry[o] then
      carry[o] = target  -- before the first minute (newest 0), nothing the rings hold is older
    end
  end
  carry[1] = minute
  carry_moved = true
end

local seeds = ARGV[3]
for i = 0, #seeds / 32 - 1 do
  local b, open_time, o, c = struct.unpack('<dddd', string.sub(seeds, i * 32 + 1, (i + 1) * 32))
  local minute = open_time / MINUTE
  merge_bar(KEYS[FIRST_BAR + b], bar_minutes[b], bar_cap[b], bar_width[b], minute, o, o)
  merge_bar(KEYS[FIRST_BAR + b], bar_minutes[b], bar_cap[b], bar_width[b], minute + bar_minutes[b] - 1, c, c)
end

for i = 0, #blob / ROW - 1 do
  local row = string.sub(blob, i * ROW + 1, (i + 1) * ROW)
  local open_time, o, h, l, c, v, q = struct.unpack('<ddddddd', row)
  local minute = open_time / MINUTE
  advance_carry(minute)
  local slot = minute % cap
  local at = slot * ROW
  local held = struct.unpack('<d', redis.call('GETRANGE', KEYS[1], at, at + 7))
  if held == open_time then
    redis.call('SETRANGE', KEYS[1], at, row)
  elseif held < open_time then
    -- Evict the slot's minute; keep its quote volume only if it is exactly one lap older.
    local previous = nan
    if held == open_time - cap * MINUTE then
      previous = struct.unpack('<d', redis.call('GETRANGE', KEYS[1], at + 48, at + 55))
    end
    redis.call('SETRANGE', KEYS[2], slot * 8, struct.pack('<d', previous))
    redis.call('SETRANGE', KEYS[1], at, row)
  elseif held == open_time + cap * MINUTE then
    -- A late minute one lap old: the ring has moved on, but the previous lap still wants it.
    redis.call('SETRANGE', KEYS[2], slot * 8, struct.pack('<d', q))
  end
  for b = 1, nbars do
    merge_bar(KEYS[FIRST_BAR + b], bar_minutes[b], bar_cap[b], bar_width[b], minute, o, c)
  end
end

if carry_moved then
  redis.call('SET', CARRY, struct.pack(CARRY_FORMAT, unpack(carry)))
end

local after = version
if #blob > 0 or #seeds > 0 or carry_moved then
  after = redis.call('INCR', KEYS[3])
  if #seeds == 0 and #blob <= LOG_MAX_BYTES and (ARGV[5] == nil or #ARGV[5] == 0) then
    redis.call('RPUSH', LOG, struct.pack('<d', after) .. blob)
    redis.call('LTRIM', LOG, -LOG_ENTRIES, -1)
  else
    redis.call('DEL', LOG)  -- too big to log, or seeds or a carried state: a copy that lacks it needs the rings
  end
end
if ARGV[2] == 'no' then
  return after
end
local reply = {after, created}
if created == 1 or known ~= version then
  if missed ~= nil then
    reply[3] = 'log'
    for i, entry in ipairs(missed) do
      reply[3 + i] = entry
    end
  else
    reply[3] = redis.call('GET', KEYS[1])
    reply[4] = redis.call('GET', KEYS[2])
    for b = 1, nbars do
      reply[4 + b] = redis.call('GET', KEYS[FIRST_BAR + b])
    end
    reply[5 + nbars] = redis.call('GET', CARRY)
  end
end
return reply
