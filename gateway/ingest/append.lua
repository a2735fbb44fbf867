-- Append a batch of purchases, each at most once per transaction_id, atomically.
--
-- KEYS[1]        the purchase stream
-- KEYS[p + 1]    with ARGV[5] "1" only: the legacy (943f4b2) idempotency key of purchase p,
--                read only
-- ARGV[1]        the idempotency window, in seconds
-- ARGV[2]        "1" when a replay must write too (the gateway WAITs for replicas), else "0"
-- ARGV[3]        the width of an idempotency bucket, in seconds
-- ARGV[4]        how many buckets before the current one may still be live
-- ARGV[5]        "1" to honour legacy idempotency keys, else "0"
-- ARGV[6]        the buckets' name up to their start second (same hash tag as KEYS[1])
-- ARGV[7], [8]   the entry's version field and its value (core/entries.py)
-- ARGV[9..16]    the names of the entry's 8 values, in order; the first is transaction_id
-- then per purchase 9 arguments: its fingerprint (8 bytes of a hash of its canonical
--                request), then its 8 values
--
-- Returns one string per purchase: the new entry id ("ms-seq") when it was appended;
-- "#" .. its record (fingerprint .. entry id) when the transaction_id is in a live bucket
-- or earlier in this call; a legacy key's value ("hex fingerprint|entry id") when it is
-- there. The check and the append of each purchase happen in one step: no race between
-- them. core/idempotency.py says what the buckets do to the window.
--
-- Redis commands per call, not per purchase, wherever the order allows: one HMGET per live
-- bucket (and one MGET of the legacy keys) reads every record the call's purchases may
-- have, then one XADD per new purchase, then one HSET writes all their records. A call
-- from a script costs Redis far more than a field of it (a lookup per purchase and bucket
-- cost about as much as the XADD itself). Writing the records after the entries is safe:
-- a script is not interrupted, and once it has written, Redis no longer refuses its writes
-- for memory, so either none of the call's purchases is appended or all of them are,
-- records included.
--
-- Why a replay writes when replicas must confirm: WAIT waits for the replication offset of
-- the connection's own last write (Redis 7+ no longer counts commands that wrote nothing).
-- A replay that only read would let WAIT return at once on a connection that never wrote
-- the original entry, confirming a purchase no replica may have. Setting the record's
-- expiry again to the same instant changes nothing, but it is propagated after the
-- original entry, so the WAIT that follows covers that entry too.
local window = tonumber(ARGV[1])
local replay_writes = ARGV[2] == '1'
local width = tonumber(ARGV[3])
local reach = tonumber(ARGV[4])
local legacy = ARGV[5] == '1'
local vf, v = ARGV[7], ARGV[8]
local n1, n2, n3, n4, n5, n6, n7, n8 =
    ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local stream = KEYS[1]
local call = redis.call
local count = (#ARGV - 16) / 9
local CHUNK = 1000  -- names per HMGET/MGET and pairs per HSET: well inside Lua's unpack limit
local current = math.floor(tonumber(call('TIME')[1]) / width)
local buckets = {}
for j = 0, reach do
    buckets[j] = ARGV[6] .. string.format('%d', (current - j) * width)
end

local function touch(key)
    local left = call('PTTL', key)
    if left > 0 then
        call('PEXPIRE', key, left)
    end
end

-- What each transaction_id already has: its record and the bucket holding it (the newest
-- bucket wins), or its legacy key's value.
local known, holder, old = {}, {}, {}
local names = {}
for first = 1, count, CHUNK do
    local last = math.min(first + CHUNK - 1, count)
    local n = last - first + 1
    for k = 1, n do
        names[k] = ARGV[9 * (first + k - 1) + 9]
    end
    for j = 0, reach do
        local got = call('HMGET', buckets[j], unpack(names, 1, n))
        for k = 1, n do
            local tx = names[k]
            if got[k] and not known[tx] then
                known[tx], holder[tx] = got[k], buckets[j]
            end
        end
    end
    if legacy then
        local got = call('MGET', unpack(KEYS, first + 1, last + 1))
        for k = 1, n do
            if got[k] then old[first + k - 1] = got[k] end
        end
    end
end

local out = {}
local fresh, nf = {}, 0
for p = 1, count do
    local a = 9 * p + 8  -- the fingerprint; the values follow, transaction_id first
    local tx = ARGV[a + 1]
    local prior = known[tx]
    if prior then
        if replay_writes and holder[tx] then touch(holder[tx]) end
        out[p] = '#' .. prior
    elseif old[p] then
        if replay_writes then touch(KEYS[p + 1]) end
        out[p] = old[p]
    else
        local id = call('XADD', stream, '*', vf, v,
            n1, tx, n2, ARGV[a + 2], n3, ARGV[a + 3], n4, ARGV[a + 4],
            n5, ARGV[a + 5], n6, ARGV[a + 6], n7, ARGV[a + 7], n8, ARGV[a + 8])
        local rec = ARGV[a] .. id
        known[tx] = rec  -- a later purchase of this call with the same id replays this one
        fresh[nf + 1], fresh[nf + 2] = tx, rec
        nf = nf + 2
        out[p] = id
    end
end
if nf > 0 then
    for first = 1, nf, 2 * CHUNK do
        call('HSET', buckets[0], unpack(fresh, first, math.min(first + 2 * CHUNK - 1, nf)))
    end
    -- A read per call; the write (propagated) once per bucket.
    if call('TTL', buckets[0]) < 0 then
        call('EXPIREAT', buckets[0], (current + 1) * width + window)
    end
end
return out
