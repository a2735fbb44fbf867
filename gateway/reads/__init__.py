"""The reads: GET /transactions/{id} and the account routes, their PostgreSQL queries and
reader, and the read-through cache in Redis."""
