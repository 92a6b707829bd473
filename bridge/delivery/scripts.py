"""The delivery queue's Lua scripts: each step that must be atomic is one script.

Events travel to and from the scripts packed into two values (`bridge.packing`).
Inside, commands that take many members (ZADD, XACK, HDEL, ...) are called once
per batch rather than once per event.

The queue's keys: `entries` (hash, id -> payload), `due` (sorted set, id -> when
it may be tried), `blocked` (hash, subject -> the id at its front) and one held
list per subject (the ids queued behind the front one, oldest first). Beside
them, `feeder` (hash: the token of the one replica feeding the sink, until when,
and the fencing counter tokens are numbered by).
"""

from __future__ import annotations

from bridge.packing import LUA_PACK, LUA_SPLIT

_HELPERS = (
    LUA_SPLIT
    + LUA_PACK
    + """
-- `command` with `values` appended, a few thousand at a time (unpack has a limit); the
-- replies that are arrays, joined.
local function call_many(command, values)
  local replies = {}
  for i = 1, #values, 4000 do
    local args = {unpack(command)}
    for j = i, math.min(i + 3999, #values) do args[#args + 1] = values[j] end
    local reply = redis.call(unpack(args))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do replies[#replies + 1] = value end
    end
  end
  return replies
end
"""
)

_QUEUE = """
-- KEYS: outbox, entries, blocked, due. ARGV: group, now ms, held prefix, ...
-- Queue outbox entries (each once) and acknowledge them all (unless they were read
-- without acknowledgement). A subject's oldest queued event is due; the later ones wait
-- in its held list. Payload: meta JSON, newline, event.
local function queue(read, ack)
  local due, acked = {}, {}
  for _, entry in ipairs(read) do
    local id, fields, f = entry[1], entry[2] or {}, {}
    for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
    if f.event then
      local subject = f.subject or ''
      local meta = cjson.encode({subject = subject, feed = f.feed or '',
        course_id = f.course or '', attempts = 0})
      if redis.call('hsetnx', KEYS[2], id, meta .. '\\n' .. f.event) == 1 then
        if redis.call('hsetnx', KEYS[3], subject, id) == 1 then
          due[#due + 1] = ARGV[2]
          due[#due + 1] = id
        else
          redis.call('rpush', ARGV[3] .. subject, id)
        end
      end
    end
    acked[#acked + 1] = id
  end
  call_many({'zadd', KEYS[4]}, due)
  if ack then call_many({'xack', KEYS[1], ARGV[1]}, acked) end
end
"""

_FEEDER = """
-- Whether `token` still holds the feeder lease kept in the hash `feeder` (holder, until, fence).
local function holds(feeder, token)
  return redis.call('hget', feeder, 'holder') == token
end
"""

FEED = (
    _HELPERS
    + _QUEUE
    + _FEEDER
    + """
-- KEYS: outbox, entries, blocked, due, feeder, sinks seen.
-- ARGV: group, now ms, held prefix, consumer, count, 'all' when every event is wanted,
--   owner (this replica), lease ms.
-- One replica at a time feeds a sink: it holds the feeder lease (renewed by each call,
-- taken over once `until` has passed) and reads as the group's one consumer, so entries
-- a dead feeder read but never queued are the next holder's pending entries, read again
-- before anything newer. A new holder first takes over what consumers of another name
-- left pending, and forgets those consumers.
-- Then: this consumer's pending entries first, else new ones. 'all' queues them here,
-- and reads new ones with NOACK: they are queued in the same step, so they need no
-- pending entry to survive a crash. Otherwise they go back packed (id, feed, course,
-- event each) for the caller to route, and stay pending until `ROUTE` settles them.
-- Returns {-1} while another replica feeds, else {read, token[, lengths, bytes]}.
local now, owner = tonumber(ARGV[2]), ARGV[7] .. '/'
redis.call('hset', KEYS[6], ARGV[1], ARGV[2])
local f = redis.call('hmget', KEYS[5], 'holder', 'until')
local token = f[1]
local mine = token and string.sub(token, 1, #owner) == owner
if token and not mine and now < tonumber(f[2] or '0') then return {-1} end
if not mine then
  token = owner .. redis.call('hincrby', KEYS[5], 'fence', 1)
  local others = false
  local summary = redis.call('xpending', KEYS[1], ARGV[1])
  for _, c in ipairs(summary[4] or {}) do
    if c[1] ~= ARGV[4] then others = true end
  end
  if others then
    local cursor = '0-0'
    repeat
      cursor = redis.call('xautoclaim', KEYS[1], ARGV[1], ARGV[4], 0, cursor,
        'COUNT', 1000, 'JUSTID')[1]
    until cursor == '0-0'
  end
  for _, c in ipairs(redis.call('xinfo', 'consumers', KEYS[1], ARGV[1])) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    if info.name ~= ARGV[4] and tonumber(info.pending) == 0 then
      redis.call('xgroup', 'delconsumer', KEYS[1], ARGV[1], info.name)
    end
  end
end
redis.call('hset', KEYS[5], 'holder', token, 'until', now + tonumber(ARGV[8]))
local take_all = ARGV[6] == 'all'
local function read(start, noack)
  local reply
  if noack then
    reply = redis.call('xreadgroup', 'GROUP', ARGV[1], ARGV[4], 'COUNT', ARGV[5], 'NOACK',
      'STREAMS', KEYS[1], start)
  else
    reply = redis.call('xreadgroup', 'GROUP', ARGV[1], ARGV[4], 'COUNT', ARGV[5],
      'STREAMS', KEYS[1], start)
  end
  if not reply or #reply == 0 then return {} end
  -- Redis wraps the one stream's reply in a list; fakeredis (the demo's stand-in) does not.
  if type(reply[1]) == 'string' then return reply[2] or {} end
  return reply[1][2] or {}
end
local entries, pending = read('0', false), true
if #entries == 0 then entries, pending = read('>', take_all), false end
if take_all then
  queue(entries, pending)
  return {#entries, token}
end
local values = {}
for _, entry in ipairs(entries) do
  local fields, f = entry[2] or {}, {}
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  for _, value in ipairs({entry[1], f.feed or '', f.course or '', f.event or ''}) do
    values[#values + 1] = value
  end
end
local packed = pack(values)
return {#entries, token, packed[1], packed[2]}
"""
)

ROUTE = (
    _HELPERS
    + _QUEUE
    + _FEEDER
    + """
-- KEYS: outbox, entries, blocked, due, feeder.
-- ARGV: group, now ms, held prefix, ids to queue, ids to acknowledge only (space-separated),
--   the feeder token they were read under.
-- Nothing happens unless the token still holds the feeder lease: a replica that lost it
-- meanwhile must not queue entries its successor may have queued already, or after
-- newer ones. Returns 1 when queued, 0 when fenced.
if not holds(KEYS[5], ARGV[6]) then return 0 end
local wanted, unwanted = {}, {}
for id in string.gmatch(ARGV[4], '%S+') do
  local found = redis.call('xrange', KEYS[1], id, id)[1]
  wanted[#wanted + 1] = found or {id, false}
end
queue(wanted, true)
for id in string.gmatch(ARGV[5], '%S+') do unwanted[#unwanted + 1] = id end
call_many({'xack', KEYS[1], ARGV[1]}, unwanted)
return 1
"""
)

RELEASE = (
    _FEEDER
    + """
-- KEYS: feeder. ARGV: token. Lets another replica take the feeder lease at once.
if holds(KEYS[1], ARGV[1]) then redis.call('hset', KEYS[1], 'until', 0) end
return 1
"""
)

CLAIM = (
    _HELPERS
    + """
-- KEYS: due, entries, disabled flag. ARGV: now ms, hide ms, count.
-- Due events, hidden for `hide` ms, packed as (id, payload) pairs; none while disabled.
if redis.call('exists', KEYS[3]) == 1 then return {'', ''} end
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {'', ''} end
local hidden, values = {}, {}
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i, id in ipairs(ids) do
  hidden[#hidden + 1] = until_ms
  hidden[#hidden + 1] = id
end
call_many({'zadd', KEYS[1]}, hidden)
local payloads = call_many({'hmget', KEYS[2]}, ids)
for i, id in ipairs(ids) do
  if payloads[i] then
    values[#values + 1] = id
    values[#values + 1] = payloads[i]
  end
end
return pack(values)
"""
)

SETTLE = """
-- KEYS: due, entries, blocked, dead letters, dropped counts, retrying.
-- ARGV: id, subject, held key, dead entry, now ms, most dead letters kept ('': no cap),
--   the dropped count's field.
-- Returns {1 if settled, dead letters dropped to stay within the cap (oldest first)}.
if not redis.call('zscore', KEYS[1], ARGV[1]) then return {0, 0} end
local dropped = 0
if ARGV[4] ~= '' then
  redis.call('xadd', KEYS[4], '*', 'entry', ARGV[4])
  if ARGV[6] ~= '' then
    dropped = redis.call('xtrim', KEYS[4], 'MAXLEN', ARGV[6])
    if dropped > 0 then redis.call('hincrby', KEYS[5], ARGV[7], dropped) end
  end
end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('srem', KEYS[6], ARGV[1])
local nxt = redis.call('lpop', ARGV[3])
if nxt then
  redis.call('hset', KEYS[3], ARGV[2], nxt)
  redis.call('zadd', KEYS[1], ARGV[5], nxt)
else
  redis.call('hdel', KEYS[3], ARGV[2])
end
return {1, dropped}
"""

SETTLE_MANY = (
    _HELPERS
    + """
-- KEYS: due, entries, blocked, retrying. ARGV: now ms, held prefix, packed (id, subject) pairs.
-- Delivered events leave the queue; the next event of each subject becomes due. An
-- event no longer in the queue (settled by another replica) is left alone.
local items = split(ARGV[3], ARGV[4])
if #items == 0 then return 0 end
local ids = {}
for i = 1, #items, 2 do ids[#ids + 1] = items[i] end
local scores = call_many({'zmscore', KEYS[1]}, ids)
local done, fronts, emptied, due = {}, {}, {}, {}
for n, id in ipairs(ids) do
  if scores[n] then
    local subject = items[2 * n]
    done[#done + 1] = id
    local nxt = redis.call('lpop', ARGV[2] .. subject)
    if nxt then
      fronts[#fronts + 1] = subject
      fronts[#fronts + 1] = nxt
      due[#due + 1] = ARGV[1]
      due[#due + 1] = nxt
    else
      emptied[#emptied + 1] = subject
    end
  end
end
call_many({'zrem', KEYS[1]}, done)
call_many({'hdel', KEYS[2]}, done)
call_many({'srem', KEYS[4]}, done)
call_many({'hset', KEYS[3]}, fronts)
call_many({'hdel', KEYS[3]}, emptied)
call_many({'zadd', KEYS[1]}, due)
return #done
"""
)

RESCHEDULE = """
-- KEYS: due, entries, retrying. ARGV: id, next ms, payload.
if not redis.call('zscore', KEYS[1], ARGV[1]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
redis.call('sadd', KEYS[3], ARGV[1])
return 1
"""

REPLAY = """
-- KEYS: dead letters, entries, blocked, due.
-- ARGV: now ms, held prefix, (dead id, id, subject, payload)...
local moved = 0
for i = 3, #ARGV, 4 do
  if redis.call('xdel', KEYS[1], ARGV[i]) == 1 then
    local id, subject = ARGV[i + 1], ARGV[i + 2]
    redis.call('hset', KEYS[2], id, ARGV[i + 3])
    if redis.call('hexists', KEYS[3], subject) == 1 then
      redis.call('rpush', ARGV[2] .. subject, id)
    else
      redis.call('hset', KEYS[3], subject, id)
      redis.call('zadd', KEYS[4], ARGV[1], id)
    end
    moved = moved + 1
  end
end
return moved
"""
