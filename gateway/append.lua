-- Append a batch of purchases, each at most once per transaction_id, atomically.
--
-- KEYS[1]        the purchase stream
-- KEYS[i], i > 1 the idempotency key of purchase i-1
-- ARGV[1]        how long an idempotency key lives, in seconds
-- ARGV[2i-2]     fingerprint of purchase i-1 (a hash of its canonical request)
-- ARGV[2i-1]     the stream payload of purchase i-1
--
-- Returns one string per purchase: the new entry id ("ms-seq") when it was appended, or
-- the stored "fingerprint|entry id" when the transaction_id was seen within the window.
-- The check and the append of each purchase happen in one step: no race between them.
local ttl = ARGV[1]
local out = {}
for i = 2, #KEYS do
    local prior = redis.call('GET', KEYS[i])
    if prior then
        out[i - 1] = prior
    else
        local fingerprint = ARGV[2 * i - 2]
        local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2 * i - 1])
        redis.call('SET', KEYS[i], fingerprint .. '|' .. id, 'EX', ttl)
        out[i - 1] = id
    end
end
return out
