"""Where the consumer groups are: the backlog of the slowest (what backpressure bounds) and the oldest entry
some group still needs (what trimming keeps).

Trimming is by ``MINID`` at that entry, never by ``MAXLEN``: nothing unacknowledged is trimmed away.
"""

from __future__ import annotations

from frame_buffer.queue.redis_streams.keys import StreamKeys

#: Publish trims at most this often ...
TRIM_EVERY_S = 0.5
#: ... or once this many bytes were published since the last trim. Redis frees trimmed entries inside XTRIM,
#: about 0.1 ms per MB here, and serves nobody meanwhile: 0.5 s of 100 KB frames at 1000/s was a 5 to 7 ms
#: stall twice a second, the largest part of p99. 4 MB per trim keeps each stall near 0.4 ms.
TRIM_EVERY_BYTES = 4 * 1024 * 1024


def slowest_backlog(keys: StreamKeys) -> int:
    """The largest lag + pending over all groups; the stream length when there is no group yet."""
    groups = keys.groups()
    if not groups:
        return int(keys.client.xlen(keys.stream))
    length = None
    worst = 0
    for group in groups:
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell after deletions: count what is past last-delivered.
            if length is None:
                length = int(keys.client.xlen(keys.stream))
            lag = length
        worst = max(worst, int(lag) + int(group["pending"]))
    return worst


#: XTRIM MINID at the oldest entry some group still needs, computed inside Redis: one round trip instead of
#: three (XINFO GROUPS, XPENDING per group, XTRIM), so that it can ride on a publish's own round trip. Needed
#: by a group: its oldest pending entry, else the entry after its last-delivered id. Ids are compared as
#: strings (a Lua number loses digits past 2**53); at a sequence part too long to add 1 exactly the
#: last-delivered entry is kept too, which costs one entry, never one still needed. No group: nothing is
#: trimmed (frames are kept for the first group to come). Returns the number of entries trimmed.
_NEEDED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function split(id) return string.match(id, '^(%d+)-(%d+)$') end
local function less(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local needed = nil
for _, group in ipairs(groups) do
  local fields = {}
  for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
  local ms, seq = split(fields['last-delivered-id'])
  local candidate = fields['last-delivered-id']
  if #seq < 15 then candidate = ms .. '-' .. string.format('%.0f', tonumber(seq) + 1) end
  local pending = redis.call('XPENDING', KEYS[1], fields['name'])
  if pending[2] and less(pending[2], candidate) then candidate = pending[2] end
  if needed == nil or less(candidate, needed) then needed = candidate end
end
"""
TRIM_SCRIPT = _NEEDED + """return redis.call('XTRIM', KEYS[1], 'MINID', needed)
"""
#: :data:`TRIM_SCRIPT` that also returns the id it trimmed at, ``[trimmed, needed]`` (``0`` when it trimmed
#: nothing for want of a stream or a group): the shared-memory payload store releases its slots by that id.
TRIM_NEEDED_SCRIPT = _NEEDED + """return {redis.call('XTRIM', KEYS[1], 'MINID', needed), needed}
"""
