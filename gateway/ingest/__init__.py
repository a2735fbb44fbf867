"""The purchase path: POST /purchase and /purchases, the coalescing appender and its Lua
script, and the backpressure that refuses purchases while the backlog endangers Redis."""
