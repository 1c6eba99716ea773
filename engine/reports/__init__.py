"""Regulatory and business reports per member bank and for the union, from the ledger."""
