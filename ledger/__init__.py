"""Money and its rules: amounts, accounts, double-entry postings, schedules.

Everything here is pure apart from `ledger.store`, which holds the SQL of a
shard. `ledger` never imports `engine`.
"""
