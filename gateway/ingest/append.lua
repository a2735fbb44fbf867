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
-- "#" .. its record (fingerprint .. entry id) when the transaction_id is in a live bucket;
-- a legacy key's value ("hex fingerprint|entry id") when it is there. The check and the
-- append of each purchase happen in one step: no race between them. core/idempotency.py
-- says what the buckets do to the window.
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
local current = math.floor(tonumber(redis.call('TIME')[1]) / width)
local buckets = {}
for j = 0, reach do
    buckets[j] = ARGV[6] .. string.format('%d', (current - j) * width)
end
local expires = (current + 1) * width + window
local expiry_set = false

local function touch(key)
    local left = redis.call('PTTL', key)
    if left > 0 then
        redis.call('PEXPIRE', key, left)
    end
end

local out = {}
for p = 1, (#ARGV - 16) / 9 do
    local a = 9 * p + 8  -- the fingerprint; the values follow, transaction_id first
    local tx = ARGV[a + 1]
    local prior, at
    for j = 0, reach do
        prior = redis.call('HGET', buckets[j], tx)
        if prior then
            at = j
            break
        end
    end
    if prior then
        if replay_writes then touch(buckets[at]) end
        out[p] = '#' .. prior
    else
        if legacy then prior = redis.call('GET', KEYS[p + 1]) end
        if prior then
            if replay_writes then touch(KEYS[p + 1]) end
            out[p] = prior
        else
            local id = redis.call('XADD', stream, '*', vf, v,
                n1, tx, n2, ARGV[a + 2], n3, ARGV[a + 3], n4, ARGV[a + 4],
                n5, ARGV[a + 5], n6, ARGV[a + 6], n7, ARGV[a + 7], n8, ARGV[a + 8])
            redis.call('HSET', buckets[0], tx, ARGV[a] .. id)
            if not expiry_set then
                -- A read per call; the write (propagated) once per bucket.
                if redis.call('TTL', buckets[0]) < 0 then
                    redis.call('EXPIREAT', buckets[0], expires)
                end
                expiry_set = true
            end
            out[p] = id
        end
    end
end
return out
