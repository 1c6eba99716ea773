"""Where state lives and how it is reached: a shard transaction with bounded waits,
the control database (reference data, admin writes), Redis, the outbox table, and the
watchers that report their health."""
