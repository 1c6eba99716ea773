"""Exactly once per (channel, Idempotency-Key): the Redis fast path and the durable
record written with the money (`records`), and the runner of one money-moving
request (`once`)."""
