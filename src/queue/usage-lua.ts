/**
 * Lua for the usage counts kept in Redis (docs/quotas.md "Counts in Redis"): every script that
 * changes a job's state also moves the job's contribution to the counts, in the same atomic
 * step, so that every gcd sharing the Redis decides on the same numbers and a crash between
 * "state written" and "count moved" cannot happen.
 *
 * A counted job carries two fields in its record:
 *   acct  JSON [user, group, queue, ncpus, memMiB, arrayParent or "", priority, seq, id]: what it is counted as;
 *   uc    'q' (counted as queued: Q, H, W), 'r' (running: R, S, E) or absent (F, or never counted).
 * Counts live in hashes `<pfx>:u:<user>`, `<pfx>:g:<group>`, `<pfx>:q:<queue>`,
 * `<pfx>:qu:<queue>:<user>`, `<pfx>:sys` (fields queued, running, ncpus, mem) and strings
 * `<pfx>:arr:<array id>` (tasks running, for %max), and zsets `<pfx>:pend:<queue>:<user>` (the
 * user's Q jobs in that queue, best -p first, then oldest). A hash that falls back to all zeros is
 * deleted, so idle entities hold no key. When nothing is queued or running anywhere the fair
 * share clock (`<pfx>:fair:*`) is dropped too (nobody waits, so no tag can matter).
 */

/** Shared local functions; `pfx` is the usage key prefix. Prepended to every script below. */
export const ACCOUNT_LUA = `
local function gcEntityKeys(pfx, a)
  return {pfx .. ':u:' .. a[1], pfx .. ':g:' .. a[2], pfx .. ':q:' .. a[3], pfx .. ':qu:' .. a[3] .. ':' .. a[1], pfx .. ':sys'}
end
local function gcDropIfZero(k)
  local v = redis.call('HMGET', k, 'queued', 'running', 'ncpus', 'mem')
  for i = 1, 4 do if v[i] and tonumber(v[i]) > 0 then return end end
  redis.call('DEL', k)
end
local function gcFairReset(pfx)
  if redis.call('EXISTS', pfx .. ':sys') == 1 then return end
  local groups = redis.call('SMEMBERS', pfx .. ':fair:groups')
  for _, g in ipairs(groups) do redis.call('DEL', pfx .. ':fair:split:' .. g) end
  redis.call('DEL', pfx .. ':fair:groups', pfx .. ':fair:finish', pfx .. ':fair:vnow')
end
-- Add (sign 1) or remove (sign -1) one job's contribution of class cls ('q' or 'r').
local function gcApply(pfx, acct, cls, sign)
  if not acct or acct == '' or not cls or cls == '' then return end
  local a = cjson.decode(acct)
  local keys = gcEntityKeys(pfx, a)
  for _, k in ipairs(keys) do
    if cls == 'q' then
      redis.call('HINCRBY', k, 'queued', sign)
    else
      redis.call('HINCRBY', k, 'running', sign)
      if tonumber(a[4]) ~= 0 then redis.call('HINCRBY', k, 'ncpus', sign * tonumber(a[4])) end
      if tonumber(a[5]) ~= 0 then redis.call('HINCRBY', k, 'mem', sign * tonumber(a[5])) end
    end
    if sign < 0 then gcDropIfZero(k) end
  end
  if cls == 'r' and a[6] and a[6] ~= '' then
    local ak = pfx .. ':arr:' .. a[6]
    if redis.call('INCRBY', ak, sign) <= 0 then redis.call('DEL', ak) end
  end
  if sign < 0 then gcFairReset(pfx) end
end
local function gcClassOf(state)
  if state == 'Q' or state == 'H' or state == 'W' then return 'q' end
  if state == 'R' or state == 'S' or state == 'E' then return 'r' end
  return ''
end
-- A user's queued (Q) jobs in one queue by -p, then submission: the dispatcher lets the best
-- of them take the user's fair-share turn (-p orders a user's own jobs only).
local function gcPending(pfx, oldAcct, acct, state)
  if oldAcct then
    local a = cjson.decode(oldAcct)
    if a[9] then redis.call('ZREM', pfx .. ':pend:' .. a[3] .. ':' .. a[1], a[9]) end
  end
  if acct and state == 'Q' then
    local a = cjson.decode(acct)
    if a[9] then redis.call('ZADD', pfx .. ':pend:' .. a[3] .. ':' .. a[1], (1023 - tonumber(a[7])) * 8589934592 + tonumber(a[8]), a[9]) end
  end
end
-- After a write to job key k: move its contribution from (old acct, old uc) to (acct now, class of state now).
local function gcAccount(pfx, k, oldAcct, oldUc)
  local now = redis.call('HMGET', k, 'acct', 'state')
  local acct = now[1]
  gcPending(pfx, oldAcct, acct, now[2])
  local cls = ''
  if acct then cls = gcClassOf(now[2]) end
  if oldAcct == acct and (oldUc or '') == cls then return end
  gcApply(pfx, acct, cls, 1)
  gcApply(pfx, oldAcct, oldUc, -1)
  if cls == '' then redis.call('HDEL', k, 'uc') else redis.call('HSET', k, 'uc', cls) end
end
`;

/**
 * Compare-and-set of one state event (job-store.ts), with the counts moved. KEYS[1] the job,
 * KEYS[2] the usage prefix; ARGV[1] JSON from-state -> to-state; then field, value pairs ('' deletes).
 */
export const TRANSITION_LUA = `${ACCOUNT_LUA}
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local to = cjson.decode(ARGV[1])[cur]
if not to then return {0, cur} end
local old = redis.call('HMGET', KEYS[1], 'acct', 'uc')
redis.call('HSET', KEYS[1], 'state', to)
for i = 2, #ARGV, 2 do
  -- acct (a new queue, from gcqmove) is written only to a job that is counted (not an array's record)
  if ARGV[i] == 'acct' and not old[1] then
  elseif ARGV[i+1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
gcAccount(KEYS[2], KEYS[1], old[1], old[2])
return {1, cur, redis.call('HGETALL', KEYS[1])}
`;

/**
 * TRANSITION_LUA guarded by one more field: the write happens only if field ARGV[2] holds
 * ARGV[3] (a run's host: a host declared dead cannot end a run the server already settled).
 * Field pairs from ARGV[4].
 */
export const TRANSITION_IF_LUA = `${ACCOUNT_LUA}
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local to = cjson.decode(ARGV[1])[cur]
if not to or redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then return {0, cur} end
local old = redis.call('HMGET', KEYS[1], 'acct', 'uc')
redis.call('HSET', KEYS[1], 'state', to)
for i = 4, #ARGV, 2 do
  if ARGV[i] == 'acct' and not old[1] then
  elseif ARGV[i+1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
gcAccount(KEYS[2], KEYS[1], old[1], old[2])
return {1, cur, redis.call('HGETALL', KEYS[1])}
`;

/**
 * The dispatcher's admit + reserve + run, one step: refused unless the job is in a from-state
 * of `run` and every running limit holds with it counted. KEYS[1] the job, KEYS[2] the usage
 * prefix. ARGV[1] the run map; ARGV[2] JSON [[maxRunning, maxNcpus, maxMem] per entity of
 * gcEntityKeys order] (-1: no limit; a missing group entity is [-1,-1,-1]); ARGV[3] the array's
 * %max (-1: none); then field pairs. Returns {1, from, record}, {0, state} (not runnable) or
 * {2, state, counts...} (a limit: queued, running, ncpus, mem per entity, then the array's running).
 */
export const START_LUA = `${ACCOUNT_LUA}
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local to = cjson.decode(ARGV[1])[cur]
if not to then return {0, cur} end
local old = redis.call('HMGET', KEYS[1], 'acct', 'uc')
if old[1] then
  local a = cjson.decode(old[1])
  local keys = gcEntityKeys(KEYS[2], a)
  local lim = cjson.decode(ARGV[2])
  local counts = {}
  local over = false
  for i, k in ipairs(keys) do
    local v = redis.call('HMGET', k, 'queued', 'running', 'ncpus', 'mem')
    local c = {tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0), tonumber(v[4] or 0)}
    for _, x in ipairs(c) do table.insert(counts, x) end
    local l = lim[i] or {-1, -1, -1}
    if l[1] >= 0 and c[2] + 1 > l[1] then over = true end
    if l[2] >= 0 and c[3] + tonumber(a[4]) > l[2] then over = true end
    if l[3] >= 0 and c[4] + tonumber(a[5]) > l[3] then over = true end
  end
  local arun = 0
  if a[6] and a[6] ~= '' then arun = tonumber(redis.call('GET', KEYS[2] .. ':arr:' .. a[6]) or 0) end
  table.insert(counts, arun)
  if tonumber(ARGV[3]) >= 0 and arun + 1 > tonumber(ARGV[3]) then over = true end
  if over then
    local out = {2, cur}
    for _, x in ipairs(counts) do table.insert(out, x) end
    return out
  end
end
redis.call('HSET', KEYS[1], 'state', to)
for i = 4, #ARGV, 2 do
  if ARGV[i+1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
gcAccount(KEYS[2], KEYS[1], old[1], old[2])
return {1, cur, redis.call('HGETALL', KEYS[1])}
`;

/**
 * New job records and their max_queued check, one step, so parallel submissions cannot
 * overshoot. KEYS[1] the usage prefix, KEYS[2] the jobs index, KEYS[3] the top-level index,
 * KEYS[4] the snapshot references. ARGV[1] JSON [[entity key, max_queued, amount]...];
 * ARGV[2] JSON records [{k, id, seq, top, snap, f: [field, value...]}]. Returns {1} or
 * {0, index of the entity over its limit (1-based), queued+running it holds}.
 */
export const CREATE_LUA = `${ACCOUNT_LUA}
local checks = cjson.decode(ARGV[1])
for i, c in ipairs(checks) do
  local v = redis.call('HMGET', c[1], 'queued', 'running')
  local held = tonumber(v[1] or 0) + tonumber(v[2] or 0)
  if held + c[3] > c[2] then return {0, i, held} end
end
for _, r in ipairs(cjson.decode(ARGV[2])) do
  redis.call('HSET', r.k, unpack(r.f))
  redis.call('ZADD', KEYS[2], r.seq, r.id)
  if r.top then redis.call('ZADD', KEYS[3], r.seq, r.id) end
  if r.snap ~= '' then
    redis.call('HSET', r.k, 'snapRef', '1')
    redis.call('HINCRBY', KEYS[4], r.snap, 1)
  end
  gcAccount(KEYS[1], r.k, false, false)
end
return {1}
`;

/**
 * Rebuild every count from the job records (gcd start: a count a crash or an older version
 * left wrong is put right). KEYS[1] the usage prefix, KEYS[2] the jobs index. Deletes every
 * count key (SCAN on the prefix), then counts each record by its acct and state. Atomic:
 * another gcd's transitions wait for it.
 */
export const REBUILD_LUA = `${ACCOUNT_LUA}
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', KEYS[1] .. ':*', 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    if string.sub(k, 1, #KEYS[1] + 6) ~= KEYS[1] .. ':fair:' then redis.call('DEL', k) end
  end
until cursor == '0'
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local k = ARGV[1] .. id
  if redis.call('EXISTS', k) == 1 then
    redis.call('HDEL', k, 'uc')
    gcAccount(KEYS[1], k, false, false)
    n = n + 1
  end
end
gcFairReset(KEYS[1])
return n
`;

/**
 * gcqmove / gcqalter -q of a job or an array's tasks, one step: every job must still be in a
 * from-state of `move` and hold the spec it was read with (a concurrent gcqalter or gcqmove
 * wins, and the caller reads again), and the destination's max_queued must hold with the moved
 * jobs counted; then all move, counts with them. KEYS[1] the usage prefix. ARGV[1] the move
 * map; ARGV[2] JSON [[entity key, max_queued, amount]...]; ARGV[3] JSON [{k, was, f: [field,
 * value...]}]. Returns {1, record...}, {0, index, state} (not movable), {2, index of the check,
 * queued+running it holds} or {3, index, state} (changed meanwhile).
 */
export const MOVE_LUA = `${ACCOUNT_LUA}
local map = cjson.decode(ARGV[1])
local jobs = cjson.decode(ARGV[3])
for i, j in ipairs(jobs) do
  local cur = redis.call('HGET', j.k, 'state')
  if not cur or not map[cur] then return {0, i, cur or ''} end
  if redis.call('HGET', j.k, 'spec') ~= j.was then return {3, i, cur} end
end
for i, c in ipairs(cjson.decode(ARGV[2])) do
  local v = redis.call('HMGET', c[1], 'queued', 'running')
  local held = tonumber(v[1] or 0) + tonumber(v[2] or 0)
  if held + c[3] > c[2] then return {2, i, held} end
end
local out = {1}
for _, j in ipairs(jobs) do
  local old = redis.call('HMGET', j.k, 'acct', 'uc')
  redis.call('HSET', j.k, 'state', map[redis.call('HGET', j.k, 'state')])
  for i = 1, #j.f, 2 do
    if j.f[i] == 'acct' and not old[1] then
    elseif j.f[i+1] == '' then redis.call('HDEL', j.k, j.f[i]) else redis.call('HSET', j.k, j.f[i], j.f[i+1]) end
  end
  gcAccount(KEYS[1], j.k, old[1], old[2])
  table.insert(out, redis.call('HGETALL', j.k))
end
return out
`;
