-- Append a batch of purchases, each at most once per transaction_id, atomically.
--
-- KEYS[1]        the purchase stream
-- KEYS[i], i > 1 the idempotency key of purchase i-1
-- ARGV[1]        how long an idempotency key lives, in seconds
-- ARGV[2]        "1" when a replay must write too (the gateway WAITs for replicas), else "0"
-- ARGV[2i-1]     fingerprint of purchase i-1 (a hash of its canonical request)
-- ARGV[2i]       the stream payload of purchase i-1
--
-- Returns one string per purchase: the new entry id ("ms-seq") when it was appended, or
-- the stored "fingerprint|entry id" when the transaction_id was seen within the window.
-- The check and the append of each purchase happen in one step: no race between them.
--
-- Why a replay writes when replicas must confirm: WAIT waits for the replication offset of
-- the connection's own last write (Redis 7+ no longer counts commands that wrote nothing).
-- A replay that only read would let WAIT return at once on a connection that never wrote
-- the original entry, confirming a purchase no replica may have. Setting the idempotency
-- key's expiry again to the same instant changes nothing, but it is propagated after the
-- original entry, so the WAIT that follows covers that entry too.
local ttl = ARGV[1]
local replay_writes = ARGV[2] == '1'
local out = {}
for i = 2, #KEYS do
    local prior = redis.call('GET', KEYS[i])
    if prior then
        if replay_writes then
            local left = redis.call('PTTL', KEYS[i])
            if left > 0 then
                redis.call('PEXPIRE', KEYS[i], left)
            end
        end
        out[i - 1] = prior
    else
        local fingerprint = ARGV[2 * i - 1]
        local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2 * i])
        redis.call('SET', KEYS[i], fingerprint .. '|' .. id, 'EX', ttl)
        out[i - 1] = id
    end
end
return out
