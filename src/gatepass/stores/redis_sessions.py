"""Browser sessions in Redis (standalone or Cluster), with a per-user index.

Keys, all of one user under one hash tag (the user's :func:`slot_tag`, which
every session ID of the user starts with), so each operation is one Lua script
on one slot, atomic on a Cluster too:

* ``gatepass:{T}:s:<id_hash>``: the session, as one compact JSON array of
  strings (handle, user, CSRF token, created, last seen, IP, user agent). A
  string, not a hash: a user agent is longer than Redis keeps a small hash
  compact for, and a hash would cost about twice the memory. It expires by
  itself at its idle or absolute timeout, whichever comes first (moved on each
  touch).
* ``gatepass:{T}:u:<user_id>:idx``: a sorted set of the user's session hashes
  (score: created), so listing and ending a user's sessions cost O(that user's
  sessions), never a SCAN. It lives as long as a session can.
* ``gatepass:{T}:u:<user_id>:ver``: the lowest credential version a new session
  may be stored for. A password change or logout-all raises it before anything
  else, so a sign-in that read the user earlier (and is still checking the old
  password) stores nothing, as the SQL store's row lock ensures there.

Each value carries the credential version the session was granted under and a
MAC (HMAC-SHA256 under a key kept in the database), so the store above checks
the version against the user's current one in PostgreSQL: a session that Redis
lost the end of (a failover to a replica that was behind, a restore, an evicted
index) stays dead, and a value written into Redis by someone without the key
grants nothing.

A session check is one round trip (``GET``). Members of the index whose
session expired are dropped whenever the index is read. Redis keeps only the
SHA-256 of a session ID, like the SQL store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, cast

from gatepass.errors import StoreUnavailable
from gatepass.freshness import SignInProof, parse_amr
from gatepass.stores.base import (
    SLOT_TAG_LENGTH,
    Evicted,
    SessionLimit,
    SessionRecord,
    slot_tag,
)
from gatepass.stores.redis_connection import RedisClient, mapped

PREFIX = "gatepass"
_MS = 1000
#: 128 bits of HMAC-SHA256 per stored session.
MAC_HEX_LENGTH = 32
logger = logging.getLogger("gatepass.stores")

# Shared by the scripts: the user's indexed sessions that still exist, as
# {id_hash, last seen, created, handle}; index entries whose session key expired
# (Redis dropped it at its timeout) are removed on the way.
_LIVE = """
local function live_members(index, prefix)
  local out = {}
  for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local raw = redis.call('GET', prefix .. member)
    if not raw then
      redis.call('ZREM', index, member)
    else
      local f = cjson.decode(raw)
      table.insert(out, {member, tonumber(f[5]), tonumber(f[4]), f[1], raw})
    end
  end
  return out
end
"""

#: KEYS: session, index, floor. ARGV: version, max sessions, now, session key
#: prefix, index ttl ms, expire-at ms, the encoded session.
INSERT = (
    _LIVE
    + """
local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) < floor then
  return false
end
local live = live_members(KEYS[2], ARGV[4])
table.sort(live, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local ended = {}
local excess = #live - (tonumber(ARGV[2]) - 1)
for i = 1, math.max(0, excess) do
  redis.call('DEL', ARGV[4] .. live[i][1])
  redis.call('ZREM', KEYS[2], live[i][1])
  table.insert(ended, live[i][4])
end
redis.call('SET', KEYS[1], ARGV[7], 'PXAT', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[3], string.sub(KEYS[1], #ARGV[4] + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return ended
"""
)

#: KEYS: session. ARGV: now, idle ms, absolute ms. Moves last seen and the expiry.
TOUCH = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local f = cjson.decode(raw)
f[5] = ARGV[1]
local now_ms = tonumber(ARGV[1]) * 1000
local at = math.min(tonumber(f[4]) * 1000 + tonumber(ARGV[3]), now_ms + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], cjson.encode(f), 'PXAT', math.ceil(at))
return 1
"""

#: KEYS: session. ARGV: index key prefix (``gatepass:{T}:u:``). Deletes the
#: session and its index entry.
DELETE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local user = cjson.decode(raw)[2]
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. user .. ':idx', string.sub(KEYS[1], -64))
return 1
"""

#: KEYS: index. ARGV: session key prefix, handle.
DELETE_BY_HANDLE = (
    _LIVE
    + """
for _, m in ipairs(live_members(KEYS[1], ARGV[1])) do
  if m[4] == ARGV[2] then
    redis.call('DEL', ARGV[1] .. m[1])
    redis.call('ZREM', KEYS[1], m[1])
    return 1
  end
end
return 0
"""
)

#: KEYS: index. ARGV: session key prefix. Every live session as {id_hash, encoded}.
LIST = (
    _LIVE
    + """
local out = {}
for _, m in ipairs(live_members(KEYS[1], ARGV[1])) do
  table.insert(out, {m[1], m[5]})
end
return out
"""
)

#: KEYS: index, floor. ARGV: session key prefix, floor version, floor ttl ms.
END_ALL = """
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > floor then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local ended = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  ended = ended + redis.call('DEL', ARGV[1] .. member)
end
redis.call('DEL', KEYS[1])
return ended
"""


def _tag_of_hash(id_hash: str) -> str:
    return id_hash[:SLOT_TAG_LENGTH]


def _session_prefix(tag: str) -> str:
    return f"{PREFIX}:{{{tag}}}:s:"


def _user_prefix(tag: str) -> str:
    return f"{PREFIX}:{{{tag}}}:u:"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as Redis holds it: the record and the credential version it was
    granted under (the caller compares it with the user's current one)."""

    record: SessionRecord
    credential_version: int


def _signed_fields(record: SessionRecord, version: int, *, with_proof: bool = True) -> list[str]:
    """What the MAC covers: every field but last seen, which Lua moves on a touch
    (a forged one could only stretch the idle timeout; the absolute one is covered).
    Values written before sessions kept their sign-in proof have no proof fields."""
    fields = [
        record.id_hash,
        record.handle,
        record.user_id,
        record.csrf_token,
        repr(record.created_at),
        record.ip or "",
        record.user_agent or "",
        str(version),
    ]
    if with_proof:
        fields += [repr(record.auth_time), " ".join(record.amr)]
    return fields


#: Stored values: 9 strings before sessions kept their sign-in proof, 11 since.
_FIELDS_BEFORE_PROOF = 9
_FIELDS_WITH_PROOF = 11


def _mac(key: bytes, fields: list[str]) -> str:
    message = "\x1f".join(fields).encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_HEX_LENGTH]


def _encode(record: SessionRecord, version: int, key: bytes) -> str:
    """The stored value: one JSON array of strings. Times as ``repr`` strings
    (Lua's JSON numbers would round them to 14 digits); the last element is the
    MAC (:func:`_signed_fields`)."""
    return json.dumps(
        [
            record.handle,
            record.user_id,
            record.csrf_token,
            repr(record.created_at),
            repr(record.last_seen_at),
            record.ip or "",
            record.user_agent or "",
            str(version),
            repr(record.auth_time),
            " ".join(record.amr),
            _mac(key, _signed_fields(record, version)),
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _decode(id_hash: str, raw: Any, key: bytes) -> StoredSession | None:
    """The session in a stored value, or ``None`` for anything that is not a value
    :func:`_encode` wrote under ``key`` for this ``id_hash`` (never an error)."""
    try:
        fields = json.loads(_text(raw))
        # Positions 1-5 are read by the Lua scripts: new fields go after them.
        with_proof = len(fields) == _FIELDS_WITH_PROOF
        auth_time, amr = (fields[8], fields[9]) if with_proof else ("0", "")
        handle, user_id, csrf, created, seen, ip, user_agent, version = fields[:8]
        mac = fields[-1] if len(fields) in (_FIELDS_WITH_PROOF, _FIELDS_BEFORE_PROOF) else ""
        record = SessionRecord(
            id_hash=id_hash,
            handle=str(handle),
            user_id=str(user_id),
            csrf_token=str(csrf),
            created_at=float(created),
            last_seen_at=float(seen),
            ip=str(ip) or None,
            user_agent=str(user_agent) or None,
            auth_time=float(auth_time),
            amr=parse_amr(str(amr)),
        )
        stored = StoredSession(record, int(version))
    except (ValueError, TypeError):
        return None
    expected = _mac(key, _signed_fields(record, stored.credential_version, with_proof=with_proof))
    if not hmac.compare_digest(expected, str(mac)):
        # Written by someone without the key (or moved to another ID): not ours.
        logger.warning("a session value in redis failed its integrity check")
        return None
    return stored


class RedisSessionStore:
    """The session role (:class:`~gatepass.stores.base.SessionStore`, less what
    needs the users) on Redis. ``idle_timeout`` and ``absolute_timeout`` give each
    key its expiry; validity itself is still decided by
    :func:`gatepass.sessions.session_state`."""

    def __init__(
        self,
        client: RedisClient,
        *,
        idle_timeout: float,
        absolute_timeout: float,
        mac_key: bytes | None = None,
    ) -> None:
        self._client = client
        self._mac_key = mac_key
        self._idle = float(idle_timeout)
        self._absolute = float(absolute_timeout)
        self._insert = client.register_script(INSERT)
        self._touch = client.register_script(TOUCH)
        self._delete = client.register_script(DELETE)
        self._delete_by_handle = client.register_script(DELETE_BY_HANDLE)
        self._list = client.register_script(LIST)
        self._end_all = client.register_script(END_ALL)

    def __repr__(self) -> str:
        return "RedisSessionStore()"

    def use_mac_key(self, key: bytes) -> None:
        """The key session values are authenticated with (shared by every node; the
        scaled-out store reads it from the database at start)."""
        self._mac_key = key

    @property
    def _key(self) -> bytes:
        if not self._mac_key:
            raise StoreUnavailable("redis session store used before its key was loaded")
        return self._mac_key

    def _index(self, user_id: str) -> tuple[str, str, str]:
        """The user's index key, floor key and session key prefix."""
        tag = slot_tag(user_id)
        users = _user_prefix(tag)
        return f"{users}{user_id}:idx", f"{users}{user_id}:ver", _session_prefix(tag)

    async def insert_session(
        self, record: SessionRecord, *, credential_version: int, limit: SessionLimit
    ) -> Evicted | None:
        """Store ``record`` unless the user's version floor is above
        ``credential_version`` (``None``); first end the user's oldest sessions
        beyond ``limit.max_per_user`` (reported by handle)."""
        if _tag_of_hash(record.id_hash) != slot_tag(record.user_id):
            raise ValueError("session ID hash does not carry its user's slot tag")
        index, floor, prefix = self._index(record.user_id)
        now = record.last_seen_at
        expire_at = min(record.created_at + self._absolute, now + self._idle)
        async with mapped():
            ended = await self._insert(
                keys=[prefix + record.id_hash, index, floor],
                args=[
                    credential_version,
                    limit.max_per_user,
                    repr(now),
                    prefix,
                    math.ceil(self._absolute * _MS),
                    math.ceil(expire_at * _MS),
                    _encode(record, credential_version, self._key),
                ],
            )
        if ended is None:
            return None
        return Evicted(sessions=tuple(_text(h) for h in cast(list[Any], ended)))

    async def get_stored(self, id_hash: str) -> StoredSession | None:
        """The stored session (one ``GET``), or ``None``."""
        key = self._key
        async with mapped():
            raw = await self._client.get(_session_prefix(_tag_of_hash(id_hash)) + id_hash)
        return _decode(id_hash, raw, key) if raw is not None else None

    async def renew_session_proof(self, id_hash: str, proof: SignInProof) -> bool:
        """Record a new sign-in proof on the session, keeping its ID and expiry.

        Read, re-sealed with the MAC, and written back only if the key still
        exists (``XX``, ``KEEPTTL``): an ended session is not brought back. A touch
        racing this may lose its ``last_seen_at``; the next touch sets it again.
        """
        stored = await self.get_stored(id_hash)
        if stored is None:
            return False
        record = replace(stored.record, auth_time=proof.auth_time, amr=proof.amr)
        value = _encode(record, stored.credential_version, self._key)
        key = _session_prefix(_tag_of_hash(id_hash)) + id_hash
        async with mapped():
            done = await self._client.set(key, value, xx=True, keepttl=True)
        return bool(done)

    async def touch_session(self, id_hash: str, now: float) -> None:
        async with mapped():
            await self._touch(
                keys=[_session_prefix(_tag_of_hash(id_hash)) + id_hash],
                args=[repr(now), math.ceil(self._idle * _MS), math.ceil(self._absolute * _MS)],
            )

    async def delete_session(self, id_hash: str) -> bool:
        tag = _tag_of_hash(id_hash)
        async with mapped():
            done = await self._delete(
                keys=[_session_prefix(tag) + id_hash], args=[_user_prefix(tag)]
            )
        return bool(done)

    async def delete_session_by_handle(self, user_id: str, handle: str) -> bool:
        index, _, prefix = self._index(user_id)
        async with mapped():
            done = await self._delete_by_handle(keys=[index], args=[prefix, handle])
        return bool(done)

    async def list_stored(self, user_id: str) -> list[StoredSession]:
        """The user's sessions, oldest first (one script)."""
        key = self._key
        index, _, prefix = self._index(user_id)
        async with mapped():
            rows = await self._list(keys=[index], args=[prefix])
        found = []
        for id_hash, raw in cast(list[Any], rows):
            stored = _decode(_text(id_hash), raw, key)
            if stored is not None and stored.record.user_id == user_id:
                found.append(stored)
        return sorted(found, key=lambda s: s.record.created_at)

    async def end_user_sessions(self, user_id: str, *, min_credential_version: int) -> int:
        index, floor, prefix = self._index(user_id)
        async with mapped():
            ended = await self._end_all(
                keys=[index, floor],
                args=[prefix, min_credential_version, math.ceil(self._absolute * _MS)],
            )
        return int(ended)

    async def ping(self) -> None:
        async with mapped():
            await self._client.ping()
