-- Versioned cache read in one round trip.
-- KEYS[1]  the account's version key (missing = version 0)
-- ARGV[1]  cache key prefix, ARGV[2] cache key suffix: the key is prefix .. version .. suffix
-- Returns {version, cached value or false}.
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version .. ARGV[2])}
