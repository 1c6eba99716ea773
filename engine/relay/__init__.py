"""Carrying out the outboxes: the relay process (`main`), what it does with each row
(`executor`: pay, debit, inquire, SMS, bureau), its batches towards core, and a
repayment's inline debit inside the request (`inline`), whose debits share core
calls (`core_coalescing`)."""
