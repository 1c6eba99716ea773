"""The engine's Prometheus metrics: every family made once, at import.

Import this module only after `PROMETHEUS_MULTIPROC_DIR` is set (the `serve`
command does it before forking), so that the prefork workers write their
samples to files and `/metrics` in any worker adds up all of them. The relay is
one process and uses the default registry.

Labels are bounded: route templates, tenants, channels and products from
configuration, shard names — never a customer or loan ID.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

# In multiprocess mode every sample update asks for the process id, to notice a
# fork — a system call each time on Python 3.11, several per request. The id is
# kept here instead, and renewed in a forked child.
_pid = [os.getpid()]


def _renew_pid() -> None:
    _pid[0] = os.getpid()


def _process_id() -> int:
    return _pid[0]


os.register_at_fork(after_in_child=_renew_pid)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]

# Fitted to this service: most API calls take 1-50 ms; a second is already bad.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# The promise is "money on the card well under 30 s".
DISBURSEMENT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to answer.", ["route", "method"], buckets=HTTP_BUCKETS_S
)
DRAWDOWNS = Counter(
    "drawdowns_total", "Drawdown requests by outcome.", ["tenant", "channel", "product", "outcome"]
)
DRAWDOWN_AMOUNT = Counter(
    "drawdown_amount_fen_total",
    "Principal of accepted drawdowns, in fen.",
    ["tenant", "channel", "product"],
)
REPAYMENTS = Counter(
    "repayments_total", "Repayment requests by outcome.", ["tenant", "channel", "mode", "outcome"]
)
DISBURSEMENT_LATENCY = Histogram(
    "disbursement_latency_seconds",
    "From the drawdown request to core's confirmed payment.",
    buckets=DISBURSEMENT_BUCKETS_S,
)
JOURNEY = Histogram(
    "journey_seconds",
    "From the application to the money on the card (customer's own signing time included).",
    buckets=DISBURSEMENT_BUCKETS_S,
)
ORIGINATION_SYSTEM = Histogram(
    "origination_system_seconds",
    "The system's own time of an online loan, the 30 s of the call: application to "
    "decision plus drawdown request to money on the card (the customer's reading and "
    "signing, and the officers' review and 面签, excluded).",
    buckets=DISBURSEMENT_BUCKETS_S,
)
BUREAU_QUERIES = Counter(
    "bureau_queries_total",
    "Credit-bureau queries by member bank (each pays for its own) and outcome.",
    ["tenant", "outcome"],
)
RULE_SET_DECISIONS = Counter(
    "origination_decisions_total",
    "Decisions by product, rule-set version and outcome (gray release).",
    ["product", "rule_set_version", "outcome"],
)
IDEMPOTENCY_REPLAYS = Counter("idempotency_replays_total", "Stored answers replayed.")
IDEMPOTENCY_CONFLICTS = Counter(
    "idempotency_conflicts_total",
    "Keys refused: in flight (409) or reused for another request (422).",
)
OUTBOX_PENDING = Gauge(
    "outbox_pending", "Outbox rows not yet done, by kind.", ["kind"], multiprocess_mode="livemax"
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_age_seconds",
    "Age of the oldest unfinished outbox row.",
    ["kind"],
    multiprocess_mode="livemax",
)
SHARD_POOL = Gauge(
    "shard_pool_connections",
    "Connections of each shard pool.",
    ["shard", "state"],
    multiprocess_mode="livesum",
)
SHARD_UP = Gauge(
    "shard_up", "1 if the shard answered its last probe.", ["shard"], multiprocess_mode="livemin"
)
SHARD_QUERY = Histogram(
    "shard_query_duration_seconds",
    "Time of one unit of shard work (a transaction or a read).",
    ["shard"],
    buckets=QUERY_BUCKETS_S,
)
BOOKING_BATCH = Histogram(
    "drawdown_booking_batch_size",
    "Drawdowns booked by one statement (engine.services.booking_batch).",
    buckets=(1, 2, 4, 8, 16, 32),
)
BOOKING_BATCH_FAILED = Counter(
    "drawdown_booking_batch_failures_total",
    "Group bookings that failed whole (a lock held too long, the shard); each drawdown "
    "of one was booked alone instead.",
)
CORE_DEBIT_BATCH = Histogram(
    "core_debit_batch_size",
    "Inline debits sent to core by one call (engine.relay.core_coalescing).",
    buckets=(1, 2, 4, 8, 16, 32),
)
CORE_CALL = Histogram(
    "core_call_duration_seconds",
    "Time of one transfer or inquiry call to core banking (engine.adapters.core_bank), by "
    "call and by what came of it: answered (any HTTP status), not_sent (no connection), "
    "no_answer (time-out or a broken connection: an inquiry resolves it).",
    ["call", "result"],
    buckets=HTTP_BUCKETS_S,
)
REPAYMENT_PHASE = Histogram(
    "repayment_phase_seconds",
    "A repayment request's time by phase: open (phase A: from the request's start to its "
    "debit, the repayment written at once or under locks), debit (core's answer, the wait "
    "for a shared core call included), complete (phase B: booked with the shard's other "
    "completions, or alone under locks).",
    ["phase"],
    buckets=HTTP_BUCKETS_S,  # up to 10 s: a debit may wait 3 s for core
)


def observe_core_call(call: str, result: str, seconds: float) -> None:
    """`CoreBankClient`'s observer (engine.adapters.core_bank): one call's time."""
    CORE_CALL.labels(call, result).observe(seconds)


REPAYMENT_BATCH = Histogram(
    "repayment_completion_batch_size",
    "Repayments completed (phase B) by one statement (engine.services.repayment_completion).",
    buckets=(1, 2, 4, 8, 16, 32),
)
REPAYMENT_BATCH_FAILED = Counter(
    "repayment_completion_batch_failures_total",
    "Group completions of repayments that failed whole (a lock held too long, the "
    "shard); each repayment of one was completed alone instead.",
)
REPAYMENT_OPENING_BATCH = Histogram(
    "repayment_opening_batch_size",
    "Repayments opened (phase A) by one statement (engine.services.repayment_opening).",
    buckets=(1, 2, 4, 8, 16, 32),
)
REPAYMENT_OPENING_BATCH_FAILED = Counter(
    "repayment_opening_batch_failures_total",
    "Group openings of repayments that failed whole (a lock held too long, a replayed "
    "nonce, the shard); each repayment of one took the locked transaction instead.",
)
REPAYMENT_OPENED = Counter(
    "repayment_openings_total",
    "Repayments' phase A booked at once (read, then one statement); the others took "
    "the locked transaction.",
    ["path"],
)
REPAYMENT_COMPLETED = Counter(
    "repayment_completions_total",
    "Repayments whose debit core took, by how phase B was done: at_once (read, then "
    "one group statement) or locked (the single path in one transaction).",
    ["path"],
)
REDIS_ERRORS = Counter(
    "redis_errors_total", "Redis calls that failed (the request went on without it)."
)
LEDGER_IMBALANCE = Gauge(
    "ledger_imbalance_fen",
    "Debits minus credits of the shard's book (0: balanced).",
    ["shard"],
    multiprocess_mode="livemax",
)
# Issue 21: who still signs version 1, who is throttled, which replays were refused.
SIGNATURE_V1 = Counter(
    "auth_signature_v1_total",
    "Requests accepted on signature version 1 (a channel's changeover window).",
    ["channel"],
)
RATE_LIMITED = Counter(
    "rate_limited_total", "Requests refused 429 by the per-channel rate limit.", ["channel"]
)
RATE_LIMIT_LOCAL = Counter(
    "rate_limit_local_total",
    "Rate-limit decisions made in-process because Redis did not answer.",
)
NONCE_REPLAYS = Counter(
    "nonce_replays_total",
    "Replayed nonces refused, by the store that caught them (redis, shard).",
    ["store"],
)
# A day-end step over a shard of 5 M loans takes minutes; a small test shard, milliseconds.
EOD_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
EOD_STEP_SECONDS = Histogram(
    "eod_step_seconds",
    "Time of one day-end step over one shard (engine.eod).",
    ["step", "shard"],
    buckets=EOD_BUCKETS_S,
)
EOD_ROWS = Counter(
    "eod_loans_processed_total",
    "Rows a day-end step processed (loans; customers for deduction and reminders; outbox "
    "rows for pruning).",
    ["step", "shard"],
)
EOD_RELAY_WAIT = Counter(
    "eod_relay_wait_seconds_total",
    "Time the day-end's deduction waited for the relay to finish its auto-debits "
    "(eod.deduct_in_flight_max open on the shard database).",
    ["shard"],
)
EOD_DUTY = Gauge(
    "eod_duty_cycle",
    "Share of its time a shard's day-end runner works (1: flat out); set by the governor "
    "from the online p99 when eod.online_p99_ms is set.",
    multiprocess_mode="livemax",
)
EOD_ONLINE_P99 = Gauge(
    "eod_online_p99_seconds",
    "The p99 of drawdowns and repayments the day-end's governor last read from the engines.",
    multiprocess_mode="livemax",
)
EOD_LAG_DAYS = Gauge(
    "eod_lag_days",
    "Days between the last business date that ended and the last one this shard's "
    "day-end finished (0: up to date).",
    ["shard"],
    multiprocess_mode="livemax",
)


def render() -> bytes:
    """The exposition text: all workers' samples in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
