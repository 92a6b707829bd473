"""Many values as two Redis script arguments: their byte lengths, then their bytes end to end.

A page commit or a delivery batch carries thousands of values; redis-py spends
more time framing thousands of small arguments (and parsing thousands of small
replies) than Redis spends running the script. Both sides of the convention
live here: `pack`/`unpack` in Python, `LUA_SPLIT` and `LUA_PACK` for the scripts.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Lua: `split(lengths, blob)` -> the values `pack` put in.
LUA_SPLIT = """
local function split(lengths, blob)
  local out, pos = {}, 1
  for len in string.gmatch(lengths, '%d+') do
    len = tonumber(len)
    out[#out + 1] = string.sub(blob, pos, pos + len - 1)
    pos = pos + len
  end
  return out
end
"""

#: Lua: `pack(values)` -> {lengths, blob}, for `unpack` to read back.
LUA_PACK = """
local function pack(values)
  local lengths = {}
  for i, value in ipairs(values) do lengths[i] = #value end
  return {table.concat(lengths, ' '), table.concat(values)}
end
"""


def pack(values: Iterable[bytes]) -> tuple[str, bytes]:
    """Byte strings as two script arguments: their lengths, and their bytes joined."""
    parts = list(values)
    return " ".join(map(str, map(len, parts))), b"".join(parts)


def unpack(lengths: bytes | str, blob: bytes | str) -> list[bytes]:
    """The values a script packed (an empty value where its length is 0)."""
    data = blob.encode() if isinstance(blob, str) else blob
    values, start = [], 0
    for length in map(int, lengths.split()):
        values.append(data[start : start + length])
        start += length
    return values
