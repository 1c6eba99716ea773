"""The lending engine: HTTP API, lending services, adapters, settings and CLI.

`engine` depends on `ledger` and `sharding`, never the other way round.
"""
