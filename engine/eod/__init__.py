"""The day-end batch (日终批量), run per shard while online traffic goes on.

    scheduler / `eod run` ─► cut-over: the business date moves from D to D+1 (control DB)
                         ─► per shard, under a lease, steps in order, each in chunks of
                             loans, each chunk one short transaction with its checkpoint:
        overdue   penalty and compound interest for D, days past due, class, post-loan rules
        cure      loans no longer overdue: DPD 0, class normal, collection case closed
        accrual   regular interest accrued through D
        deduct    one combined debit per customer of everything due through D
        remind    an SMS a few days before a due date
        prune     finished outbox rows past their retention
                         ─► every shard done: D is closed

A killed run resumes at its checkpoint; a finished date does nothing again.
"""
