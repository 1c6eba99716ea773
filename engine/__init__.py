"""The lending engine, by concern. Each package imports only the ones below it:

    serve, migrate, cli/ (process entry points), settings (read by all)
    http/          the channel API over HTTP
    relay/         carrying out the outboxes, a repayment's inline debit
    origination/   application to signed contract
    reports/       reports per member bank and the union, from the ledger (beside eod/)
    services/      what a request does to a customer's shard
    idempotency/   exactly once per key
    stores/        shards, control database, Redis, outbox
    contract/  security/  runtime/  adapters/   leaves

`engine` depends on `ledger` and `sharding`, never the other way round
(tests/test_layers.py holds all of this).
"""
