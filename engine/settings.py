"""Every setting of the engine, with its default, in one place.

Precedence: defaults (the local stack of `ops/stack.sh`) < the TOML file named
by `ENGINE_CONFIG` < environment variables. Unknown keys in the file are
refused, so a typo cannot silently fall back to a default.

    ENGINE_ENV            prod | dev | test           (default prod: a host started without
                                                      it runs on its own keys or not at all;
                                                      dev and test: demo data, settable clock,
                                                      the published dev keys)
    ENGINE_HTTP_HOST      127.0.0.1
    ENGINE_HTTP_PORT      8080                        the channel API (/v1/, /healthz)
    ENGINE_OPS_HOST       127.0.0.1                   the operations listener: /readyz,
    ENGINE_OPS_PORT       8081                        /metrics, /openapi.json, /healthz
    ENGINE_TLS_CERT_FILE, ENGINE_TLS_KEY_FILE         PEM files: the API is served over TLS
    ENGINE_BEHIND_TLS_PROXY  0 | 1                    prod without a certificate: TLS ends at
                                                      a proxy in front (see README)
    ENGINE_RATE_LIMIT_PER_S  200                      requests per second per channel (a
                                                      channel's own `rate_limit_per_s` wins)
    ENGINE_RATE_LIMIT_BURST_S  1.0                    a burst of this many seconds' worth
    ENGINE_WORKERS        1                           prefork worker processes (one per core
                                                      of a host of the engine's own)
    ENGINE_CONTROL_DSN    postgresql://postgres@127.0.0.1:55431/control
    ENGINE_SHARD_DSNS     name=dsn,name=dsn,...       physical shards, in map order
    ENGINE_REDIS_URL      redis://127.0.0.1:56379/0
    ENGINE_LOG_LEVEL      INFO
    ENGINE_REFERENCE_REFRESH_S  2.0                   how often cached reference data reloads
    ENGINE_BOOKING_BATCH_MAX  32                      drawdowns per group booking (1: none)
    ENGINE_BOOKING_GATHER_S   0.005                   a group booking's wait for its shard's
                                                      drawdowns still reading their line
    ENGINE_BOOKING_IN_FLIGHT  2                       group bookings at once per shard database
    ENGINE_CORE_URL, ENGINE_SMS_URL                   core banking and SMS gateway
    ENGINE_CORE_TIMEOUT_S, ENGINE_INLINE_DEBIT_WAIT_S, ENGINE_NOT_FOUND_FINAL_S,
    ENGINE_RELAY_LEASE_S, ENGINE_RELAY_GATHER_S, ENGINE_RELAY_IDLE_POLL_S,
    ENGINE_RELAY_IDLE_POLL_MAX_S (each empty claim doubles the wait, up to this),
    ENGINE_REPAYMENT_BATCH_MAX (32: repayments completed by one statement; 1: none),
    ENGINE_RELAY_METRICS_PORT, ENGINE_RELAY_NICE, ENGINE_RELAY_BACKEND_NICE
                                                      see ExternalSettings
    ENGINE_PII_KEYS       1:<base64 32 bytes>,2:...   AES-256-GCM keys by version
                                                      (dev and test: the published dev keys)
    ENGINE_PII_KEY_VERSION  the version new ciphertexts use (default: the highest)
    ENGINE_PII_INDEX_KEY  <base64 32 bytes>           HMAC key of the lookup index
    ENGINE_EOD_SETTLE_S, ENGINE_EOD_POLL_S, ENGINE_EOD_CUTOFF_TIME,
    ENGINE_EOD_METRICS_PORT, ENGINE_EOD_RULES_FILE,
    ENGINE_EOD_SHARDS_AT_ONCE, ENGINE_EOD_DUTY_CYCLE, ENGINE_EOD_DEDUCT_IN_FLIGHT_MAX,
    ENGINE_EOD_ONLINE_P99_MS, ENGINE_EOD_ONLINE_METRICS_URL, ENGINE_EOD_NICE  see EodSettings

A TOML file may also give `[[shard_ranges]]` (first, last, shard) to map
logical shards explicitly, and `[pool]` limits.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from engine.security.pii import DEV_CURRENT_VERSION, DEV_INDEX_KEY_B64, DEV_KEYS_B64
from sharding.pools import PoolLimits
from sharding.shard_map import PhysicalShard, ShardMap, ShardRange

Env = Literal["dev", "test", "prod"]

_PG_0 = "postgresql://postgres@127.0.0.1:55431"
_PG_1 = "postgresql://postgres@127.0.0.1:55432"


def _default_shards() -> list[PhysicalShard]:
    return [
        PhysicalShard("shard_0", f"{_PG_0}/shard_0"),
        PhysicalShard("shard_1", f"{_PG_0}/shard_1"),
        PhysicalShard("shard_2", f"{_PG_1}/shard_2"),
        PhysicalShard("shard_3", f"{_PG_1}/shard_3"),
    ]


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # The local stack shares two cores with PostgreSQL, Redis, the relay, the fakes and
    # the load generator: one worker did 10 % more drawdowns/s there than two
    # (BENCHMARKS.md, third round). A host of its own: about one per core.
    workers: int = 1
    body_max_bytes: int = 64 * 1024
    shutdown_timeout_s: float = 15.0
    backlog: int = 1024
    # Group booking (engine.services.booking_batch): drawdowns per book_drawdowns call
    # (1: each booked alone, as before migration 0010), and how long a call waits for
    # the drawdowns of its shard that are still reading their line.
    booking_batch_max: int = 32
    booking_gather_s: float = 0.005
    booking_in_flight: int = 2  # calls per shard database at once, per worker
    # The operations endpoints (/readyz, /metrics, /openapi.json) have a listener of
    # their own, on an internal address: /readyz touches every pool, /metrics shows
    # volumes per tenant. The public port keeps /healthz only.
    ops_host: str = "127.0.0.1"
    ops_port: int = 8081
    # TLS on the public port when both are set (PEM); else plain HTTP, which prod
    # accepts off loopback only with `behind_tls_proxy` (TLS ends at a proxy in front).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    behind_tls_proxy: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ValueError("http.workers must be 1..64")
        if not 0 <= self.ops_port <= 65535:
            raise ValueError("http.ops_port must be 0..65535")
        if self.ops_port != 0 and self.ops_port == self.port:
            raise ValueError("http.ops_port must differ from http.port")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("http.tls_cert_file and http.tls_key_file go together")
        if not 1 <= self.booking_batch_max <= 256 or not 0 <= self.booking_gather_s <= 0.1:
            raise ValueError("http.booking_batch_max must be 1..256, booking_gather_s 0..0.1")
        if not 1 <= self.booking_in_flight <= 64:
            raise ValueError("http.booking_in_flight must be 1..64")
        if not 0 <= self.port <= 65535:
            raise ValueError("http.port must be 0..65535")


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = "redis://127.0.0.1:56379/0"
    timeout_s: float = 0.5  # connect, and every reply (engine.stores.redis_wire)
    pending_max: int = 10_000  # calls waiting for a reply at once, per process

    def __post_init__(self) -> None:
        if not self.url.startswith("redis://"):
            raise ValueError("redis.url must be redis://[user:password@]host:port/db")
        if not 0 < self.timeout_s <= 30 or not 1 <= self.pending_max <= 1_000_000:
            raise ValueError("redis.timeout_s must be in (0, 30], redis.pending_max 1..1000000")


class RateLimitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Requests per channel (engine.http.throttle), shared by every worker through Redis."""

    # The default of a channel without its own `rate_limit_per_s` (control database).
    per_channel_per_s: float = 200.0
    # How many seconds' worth a channel may send at once after a quiet spell.
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.per_channel_per_s <= 100_000 or not 0 < self.burst_s <= 60:
            raise ValueError("rate_limit.per_channel_per_s must be 0.1..100000, burst_s (0, 60]")


class SecuritySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Durable nonces (the shards' `request_nonce`) and how long they are kept."""

    # A signed request is accepted within ±300 s of its timestamp, so a nonce can be
    # replayed at most 600 s after it was first seen: kept longer than that, then swept.
    nonce_retention_s: int = 900
    nonce_sweep_s: float = 60.0  # how often the relay sweeps, per shard
    nonce_sweep_batch: int = 5000  # rows per DELETE; at most 20 per sweep

    def __post_init__(self) -> None:
        if not 660 <= self.nonce_retention_s <= 86_400:
            raise ValueError("security.nonce_retention_s must be 660..86400 (skew window x2)")
        if not 1 <= self.nonce_sweep_s <= 3600 or not 100 <= self.nonce_sweep_batch <= 100_000:
            raise ValueError("security.nonce_sweep_s must be 1..3600, nonce_sweep_batch 100..1e5")


class CryptoSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pii_keys: dict[str, str] = msgspec.field(default_factory=dict)
    pii_key_version: int = 0
    pii_index_key: str = ""

    def resolved(self, env: str) -> CryptoSettings:
        """The keys to use; dev and test fall back to the fixed dev keys."""
        if self.pii_keys and self.pii_index_key:
            version = self.pii_key_version or max(int(v) for v in self.pii_keys)
            return CryptoSettings(self.pii_keys, version, self.pii_index_key)
        if env == "prod":
            raise ValueError(
                "crypto.pii_keys and crypto.pii_index_key are required when env = prod "
                "(ENGINE_ENV unset means prod; the local stack sets ENGINE_ENV=dev)"
            )
        # The published dev keys: the local stack and tests only; prod refuses them above.
        return CryptoSettings(dict(DEV_KEYS_B64), DEV_CURRENT_VERSION, DEV_INDEX_KEY_B64)


class ExternalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Systems we do not own, and how the relay treats them."""

    core_url: str = "http://127.0.0.1:18601"
    core_timeout_s: float = 5.0
    sms_url: str = "http://127.0.0.1:18602"
    sms_timeout_s: float = 3.0
    # A repayment waits this long for core's debit before answering `processing`.
    inline_debit_wait_s: float = 3.0
    # Inline debits share core calls beyond this many in flight per engine process
    # (engine/relay/core_coalescing.py); 0: each debit its own call.
    inline_debit_in_flight: int = 4
    relay_batch_max: int = 50
    # Repayments' completions (phase B) booked by one statement per shard database
    # (engine/services/repayment_completion.py); 1: each alone through the same function.
    repayment_batch_max: int = 32
    relay_concurrency: int = 32
    relay_lease_s: float = 30.0
    relay_idle_poll_s: float = 0.1
    # Each empty claim in a row doubles a shard's idle wait, up to this: a relay whose
    # rows come a few minutes a day (the day-end's batch lane; `make up` gives it 1 s)
    # need not ask every shard ten times a second. None: relay_idle_poll_s (no back-off).
    relay_idle_poll_max_s: float | None = None
    # After a batch that was not full, a shard's next claim waits until this long after
    # the last one: a busy shard's rows then go out in fuller batches (fewer calls,
    # less CPU per row) for at most this much more time to the card.
    relay_gather_s: float = 0.1
    relay_backoff_max_s: float = 10.0
    sms_attempts_max: int = 5
    # Core answering "no such transaction" this long after we sent it means it
    # never will: the movement failed. Must exceed core's own processing time.
    not_found_final_s: float = 120.0
    relay_metrics_port: int = 9101
    # CPU priority (nice, 0..19) of the relay process (engine/runtime/priority.py). Its
    # work is off the answers' path (a drawdown answers `disbursing`, a repayment debits
    # inline) but not off the money's: above 0 a busy host hands the card its money
    # later. At 10, on the 2-core bench host at half saturation, the drawdown p99 fell
    # by a quarter and the money took 14 ms longer (BENCHMARKS.md, issue 20, tenth
    # round). 0: unchanged.
    relay_nice: int = 10
    # The same for its PostgreSQL backends, where the server is on this host. 0 by
    # default: they hold the ledger stripes' and the lines' locks that the online group
    # calls wait for (250 ms, then each item alone), and a lowered lock holder would
    # make the requests wait on the scheduler. The batch relay of `make up` lowers both.
    relay_backend_nice: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.relay_nice <= 19 or not 0 <= self.relay_backend_nice <= 19:
            raise ValueError("relay_nice and relay_backend_nice must be 0..19")
        if min(self.core_timeout_s, self.sms_timeout_s, self.inline_debit_wait_s) <= 0:
            raise ValueError("external time-outs must be positive")
        if not 0 <= self.relay_gather_s <= 1:
            raise ValueError("relay_gather_s must be 0..1")
        first, most = self.relay_idle_poll_s, self.relay_idle_poll_max_s
        if not 0 < first <= (first if most is None else most) <= 30:
            raise ValueError("relay_idle_poll_s must be > 0, <= relay_idle_poll_max_s <= 30")
        if not 0 <= self.inline_debit_in_flight <= 64:
            raise ValueError("inline_debit_in_flight must be 0..64")
        if not 1 <= self.repayment_batch_max <= 256:
            raise ValueError("repayment_batch_max must be 1..256")
        if not 1 <= self.relay_concurrency <= 256 or not 1 <= self.relay_batch_max <= 1000:
            raise ValueError("relay_concurrency must be 1..256 and relay_batch_max 1..1000")
        # A batch core refuses whole is sent again item by item: two calls in one lease.
        if self.relay_lease_s <= 2 * self.core_timeout_s:
            raise ValueError("relay_lease_s must exceed twice core_timeout_s")


# sha256("demo-operator"): the local stack's static operator token (dev and test only).
DEV_OPERATOR_TOKEN_SHA256 = "9437e87fae95c03d3778f2575bb18ce30e647e51d86a8c37963364e1fc4f374e"  # noqa: S105 - a published hash


class OriginationSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bureau_url: str = "http://127.0.0.1:18603"
    bureau_timeout_s: float = 5.0
    # A parsed bureau report is reused for this long instead of querying again.
    bureau_report_valid_days: int = 30
    rulesets_dir: str = ""  # default: engine/rulesets
    # Gray release: this share of applications uses the candidate rule set, if any.
    candidate_percent: int = 10
    # The local stack releases demo-credit's rule set v2 to 10 % of applications.
    candidate_versions: dict[str, str] = msgspec.field(
        default_factory=lambda: {"demo-credit": "v2"}
    )
    current_versions: dict[str, str] = msgspec.field(default_factory=dict)
    # Dev and test only: static operator tokens (SHA-256) standing for the dev operator
    # (engine.http.operator_auth.DEV_PRINCIPAL). Production accepts session tokens only.
    operator_token_sha256: list[str] = msgspec.field(default_factory=list)
    # The contract's one-time signing code (engine.origination.otp): how long it lives,
    # how many wrong codes lock the contract and for how long, the wait between codes.
    otp_ttl_s: int = 300
    otp_attempts_max: int = 5
    otp_lock_s: int = 1800
    otp_resend_s: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.candidate_percent <= 100:
            raise ValueError("origination.candidate_percent must be 0..100")
        if not 60 <= self.otp_ttl_s <= 900 or not 1 <= self.otp_attempts_max <= 10:
            raise ValueError("origination.otp_ttl_s must be 60..900, otp_attempts_max 1..10")
        if not 60 <= self.otp_lock_s <= 86_400 or not 0 <= self.otp_resend_s <= 300:
            raise ValueError("origination.otp_lock_s must be 60..86400, otp_resend_s 0..300")


class EodSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The day-end batch (engine/eod): its chunks, its schedule, its rules."""

    # Loans per chunk transaction: each chunk's loans are locked for its short commit.
    accrual_chunk: int = 2000  # one SQL function call per chunk
    overdue_chunk: int = 200  # computed in Python (ledger.overdue), rewritten plan by plan
    # Customers: one repayment each, as POST /v1/repayments, all opened by one statement;
    # their loans are locked from that statement to the chunk's commit.
    deduct_chunk: int = 100
    # Customers per reminder chunk: it only reads loans and queues SMS, so a chunk may
    # be large (its time is the runner decoding plans: 1,000 measured as fast as 100).
    remind_chunk: int = 1000
    # Auto-debits opened and not yet finished by the relay, per shard database: the
    # deduction waits under this before its next chunk (a bounded queue; the relay's
    # debits, completions and SMS are the day-end's cost too, and the governor counts
    # the wait as the runner's work).
    deduct_in_flight_max: int = 100
    prune_chunk: int = 5000
    # After the business date moves, wait this long before the day's steps run: every
    # engine sees the new date within reference_refresh_s, and requests in flight end.
    settle_s: float = 5.0
    # The scheduler (python -m engine eod schedule): the business day ends at this
    # Asia/Shanghai time of the next calendar day ("00:00": at midnight).
    cutoff_time: str = "00:00"
    poll_s: float = 30.0  # how often it looks for a day to close or a shard to resume
    metrics_port: int = 9102
    rules_file: str = ""  # default: engine/eod/rules/default.json
    outbox_retention_days: int = 30  # finished outbox rows older than this are deleted
    # Pacing, for a database that online traffic shares: how many shard databases the
    # day-end works on at once (0: all), and the share of its time a shard's runner
    # works (after a chunk of t seconds it rests t × (1 − duty) / duty).
    shards_at_once: int = 0
    duty_cycle: float = 1.0
    # The governor (engine/eod/governor.py): while the engines' p99 of drawdowns and
    # repayments is above this, the duty cycle is lowered, and raised again up to
    # `duty_cycle` when it is well under (0: no governor). Read every
    # `online_window_s` from `online_metrics_url` (default: this host's ops listener).
    online_p99_ms: float = 0.0
    online_window_s: float = 2.0
    online_metrics_url: str = ""
    # CPU priority (nice, 0..19) of the runner and of its PostgreSQL backends where the
    # server is on this host (engine/runtime/priority.py): online work is served first
    # and the day-end takes the CPU it leaves. 0: unchanged.
    nice: int = 19

    def __post_init__(self) -> None:
        chunks = (
            self.accrual_chunk,
            self.overdue_chunk,
            self.deduct_chunk,
            self.remind_chunk,
            self.prune_chunk,
        )
        if not all(1 <= n <= 20_000 for n in chunks):
            raise ValueError("eod chunk sizes must be 1..20000")
        if not 0 <= self.settle_s <= 300 or not 0.1 <= self.poll_s <= 3600:
            raise ValueError("eod.settle_s must be 0..300 and eod.poll_s 0.1..3600")
        if not 1 <= self.deduct_in_flight_max <= 100_000:
            raise ValueError("eod.deduct_in_flight_max must be 1..100000")
        if not 1 <= self.outbox_retention_days <= 3650:
            raise ValueError("eod.outbox_retention_days must be 1..3650")
        if not 0 <= self.shards_at_once <= 1024 or not 0.05 <= self.duty_cycle <= 1.0:
            raise ValueError("eod.shards_at_once must be 0..1024 and eod.duty_cycle 0.05..1")
        if not 0 <= self.online_p99_ms <= 60_000 or not 0.2 <= self.online_window_s <= 60:
            raise ValueError("eod.online_p99_ms must be 0..60000 and eod.online_window_s 0.2..60")
        if not 0 <= self.nice <= 19:
            raise ValueError("eod.nice must be 0..19")
        hours, _, minutes = self.cutoff_time.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError("eod.cutoff_time must be HH:MM")


class OperatorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Operators' logins (engine/operators): session lifetime, lockout, argon2 cost."""

    session_ttl_s: int = 1800  # a login's token lives this long (no sliding renewal)
    lockout_failures: int = 5  # this many wrong passwords in a row lock the account
    lockout_s: int = 900  # for this long, unless an admin unlocks it first
    # argon2id cost: OWASP's minimum (19 MiB, 2 passes, 1 lane) by default.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19_456
    argon2_parallelism: int = 1
    audit_page_max: int = 500  # GET /v1/audit returns at most this many entries

    def __post_init__(self) -> None:
        if not 60 <= self.session_ttl_s <= 43_200:
            raise ValueError("operators.session_ttl_s must be 60..43200")
        if not 1 <= self.lockout_failures <= 20 or not 60 <= self.lockout_s <= 86_400:
            raise ValueError("operators.lockout_failures must be 1..20, lockout_s 60..86400")
        if not 1 <= self.argon2_time_cost <= 10 or not 8_192 <= self.argon2_memory_kib <= 1_048_576:
            raise ValueError("operators.argon2_time_cost 1..10, argon2_memory_kib 8192..1048576")
        if not 1 <= self.argon2_parallelism <= 8 or not 10 <= self.audit_page_max <= 5000:
            raise ValueError("operators.argon2_parallelism 1..8, audit_page_max 10..5000")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Production unless told otherwise: a host started without ENGINE_ENV must not fall
    # back to the published dev keys, the demo operator token or demo data.
    env: Env = "prod"
    log_level: str = "INFO"
    control_dsn: str = f"{_PG_0}/control"
    shards: list[PhysicalShard] = msgspec.field(default_factory=_default_shards)
    shard_ranges: list[ShardRange] = msgspec.field(default_factory=list)
    pool: PoolLimits = msgspec.field(default_factory=PoolLimits)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    crypto: CryptoSettings = msgspec.field(default_factory=CryptoSettings)
    external: ExternalSettings = msgspec.field(default_factory=ExternalSettings)
    origination: OriginationSettings = msgspec.field(default_factory=OriginationSettings)
    eod: EodSettings = msgspec.field(default_factory=EodSettings)
    rate_limit: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    operators: OperatorSettings = msgspec.field(default_factory=OperatorSettings)
    reference_refresh_s: float = 2.0

    def shard_map(self) -> ShardMap:
        return ShardMap(tuple(self.shards), tuple(self.shard_ranges))


class SettingsError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


def _parse_shard_dsns(text: str) -> list[dict[str, str]]:
    shards = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, dsn = item.partition("=")
        if not sep or not name or not dsn:
            raise SettingsError(f"ENGINE_SHARD_DSNS item {item!r} is not name=dsn")
        shards.append({"name": name, "dsn": dsn})
    return shards


def _env_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    raw: dict[str, object] = {}
    simple = {
        "ENGINE_ENV": "env",
        "ENGINE_LOG_LEVEL": "log_level",
        "ENGINE_CONTROL_DSN": "control_dsn",
    }
    for var, key in simple.items():
        if var in environ:
            raw[key] = environ[var]
    if "ENGINE_SHARD_DSNS" in environ:
        raw["shards"] = _parse_shard_dsns(environ["ENGINE_SHARD_DSNS"])
    crypto: dict[str, object] = {}
    if "ENGINE_PII_KEYS" in environ:
        pairs = [item.partition(":") for item in environ["ENGINE_PII_KEYS"].split(",") if item]
        crypto["pii_keys"] = {version.strip(): key.strip() for version, _, key in pairs}
    if "ENGINE_PII_KEY_VERSION" in environ:
        crypto["pii_key_version"] = int(environ["ENGINE_PII_KEY_VERSION"])
    if "ENGINE_PII_INDEX_KEY" in environ:
        crypto["pii_index_key"] = environ["ENGINE_PII_INDEX_KEY"]
    if crypto:
        raw["crypto"] = crypto
    external: dict[str, object] = {}
    for var, key in (
        ("ENGINE_CORE_URL", "core_url"),
        ("ENGINE_SMS_URL", "sms_url"),
    ):
        if var in environ:
            external[key] = environ[var]
    for var, key in (
        ("ENGINE_CORE_TIMEOUT_S", "core_timeout_s"),
        ("ENGINE_INLINE_DEBIT_WAIT_S", "inline_debit_wait_s"),
        ("ENGINE_NOT_FOUND_FINAL_S", "not_found_final_s"),
        ("ENGINE_RELAY_LEASE_S", "relay_lease_s"),
        ("ENGINE_RELAY_GATHER_S", "relay_gather_s"),
        ("ENGINE_RELAY_IDLE_POLL_S", "relay_idle_poll_s"),
        ("ENGINE_RELAY_IDLE_POLL_MAX_S", "relay_idle_poll_max_s"),
    ):
        if var in environ:
            external[key] = float(environ[var])
    for var, key in (
        ("ENGINE_REPAYMENT_BATCH_MAX", "repayment_batch_max"),
        ("ENGINE_RELAY_BATCH_MAX", "relay_batch_max"),
        ("ENGINE_INLINE_DEBIT_IN_FLIGHT", "inline_debit_in_flight"),
        ("ENGINE_RELAY_NICE", "relay_nice"),
        ("ENGINE_RELAY_BACKEND_NICE", "relay_backend_nice"),
    ):
        if var in environ:
            external[key] = int(environ[var])
    if "ENGINE_RELAY_METRICS_PORT" in environ:
        external["relay_metrics_port"] = int(environ["ENGINE_RELAY_METRICS_PORT"])
    if external:
        raw["external"] = external
    origination: dict[str, object] = {}
    if "ENGINE_BUREAU_URL" in environ:
        origination["bureau_url"] = environ["ENGINE_BUREAU_URL"]
    if "ENGINE_BUREAU_TIMEOUT_S" in environ:
        origination["bureau_timeout_s"] = float(environ["ENGINE_BUREAU_TIMEOUT_S"])
    if "ENGINE_CANDIDATE_PERCENT" in environ:
        origination["candidate_percent"] = int(environ["ENGINE_CANDIDATE_PERCENT"])
    if origination:
        raw["origination"] = origination
    eod = _eod_overrides(environ)
    if eod:
        raw["eod"] = eod
    if "ENGINE_REFERENCE_REFRESH_S" in environ:
        raw["reference_refresh_s"] = float(environ["ENGINE_REFERENCE_REFRESH_S"])
    if "ENGINE_REDIS_URL" in environ:
        raw["redis"] = {"url": environ["ENGINE_REDIS_URL"]}
    http = _http_overrides(environ)
    if http:
        raw["http"] = http
    rate_limit = {
        key: float(environ[var])
        for var, key in (
            ("ENGINE_RATE_LIMIT_PER_S", "per_channel_per_s"),
            ("ENGINE_RATE_LIMIT_BURST_S", "burst_s"),
        )
        if var in environ
    }
    if rate_limit:
        raw["rate_limit"] = rate_limit
    return raw


def _http_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    http: dict[str, object] = {}
    for var, key in (
        ("ENGINE_HTTP_HOST", "host"),
        ("ENGINE_HTTP_PORT", "port"),
        ("ENGINE_WORKERS", "workers"),
        ("ENGINE_BOOKING_BATCH_MAX", "booking_batch_max"),
        ("ENGINE_BOOKING_IN_FLIGHT", "booking_in_flight"),
        ("ENGINE_OPS_HOST", "ops_host"),
        ("ENGINE_OPS_PORT", "ops_port"),
        ("ENGINE_TLS_CERT_FILE", "tls_cert_file"),
        ("ENGINE_TLS_KEY_FILE", "tls_key_file"),
    ):
        if var in environ:
            text_valued = key in ("host", "ops_host", "tls_cert_file", "tls_key_file")
            http[key] = environ[var] if text_valued else int(environ[var])
    if "ENGINE_BOOKING_GATHER_S" in environ:
        http["booking_gather_s"] = float(environ["ENGINE_BOOKING_GATHER_S"])
    if "ENGINE_BEHIND_TLS_PROXY" in environ:
        http["behind_tls_proxy"] = environ["ENGINE_BEHIND_TLS_PROXY"] in ("1", "true", "yes")
    return http


def _eod_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    eod: dict[str, object] = {}
    for var, key in (("ENGINE_EOD_SETTLE_S", "settle_s"), ("ENGINE_EOD_POLL_S", "poll_s")):
        if var in environ:
            eod[key] = float(environ[var])
    for var, key in (
        ("ENGINE_EOD_METRICS_PORT", "metrics_port"),
        ("ENGINE_EOD_SHARDS_AT_ONCE", "shards_at_once"),
        ("ENGINE_EOD_DEDUCT_IN_FLIGHT_MAX", "deduct_in_flight_max"),
        ("ENGINE_EOD_NICE", "nice"),
        ("ENGINE_EOD_ACCRUAL_CHUNK", "accrual_chunk"),
        ("ENGINE_EOD_OVERDUE_CHUNK", "overdue_chunk"),
        ("ENGINE_EOD_DEDUCT_CHUNK", "deduct_chunk"),
        ("ENGINE_EOD_REMIND_CHUNK", "remind_chunk"),
        ("ENGINE_EOD_PRUNE_CHUNK", "prune_chunk"),
    ):
        if var in environ:
            eod[key] = int(environ[var])
    if "ENGINE_EOD_CUTOFF_TIME" in environ:
        eod["cutoff_time"] = environ["ENGINE_EOD_CUTOFF_TIME"]
    if "ENGINE_EOD_DUTY_CYCLE" in environ:
        eod["duty_cycle"] = float(environ["ENGINE_EOD_DUTY_CYCLE"])
    if "ENGINE_EOD_ONLINE_P99_MS" in environ:
        eod["online_p99_ms"] = float(environ["ENGINE_EOD_ONLINE_P99_MS"])
    if "ENGINE_EOD_ONLINE_METRICS_URL" in environ:
        eod["online_metrics_url"] = environ["ENGINE_EOD_ONLINE_METRICS_URL"]
    if "ENGINE_EOD_RULES_FILE" in environ:
        eod["rules_file"] = environ["ENGINE_EOD_RULES_FILE"]
    return eod


def _merge(base: dict[str, object], top: Mapping[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    config_path = environ.get("ENGINE_CONFIG")
    if config_path:
        try:
            raw = tomllib.loads(Path(config_path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"ENGINE_CONFIG {config_path}: {exc}") from exc
    try:
        raw = _merge(raw, _env_overrides(environ))
        settings = msgspec.convert(raw, Settings)
        settings.shard_map()  # refuse a map that is not a partition now, not on first use
        settings = msgspec.structs.replace(settings, crypto=settings.crypto.resolved(settings.env))
        if not settings.origination.operator_token_sha256 and settings.env != "prod":
            origination = msgspec.structs.replace(
                settings.origination, operator_token_sha256=[DEV_OPERATOR_TOKEN_SHA256]
            )
            settings = msgspec.structs.replace(settings, origination=origination)
        if settings.env == "prod":
            _refuse_published_secrets(settings)
            _refuse_plain_http_off_loopback(settings.http)
    except (msgspec.ValidationError, ValueError) as exc:
        raise SettingsError(f"invalid configuration: {exc}") from exc
    return settings


def _refuse_published_secrets(settings: Settings) -> None:
    """Production never runs on a key or token that is in this repository."""
    crypto = settings.crypto
    published = {_key_bytes(key) for key in (*DEV_KEYS_B64.values(), DEV_INDEX_KEY_B64)}
    configured = {_key_bytes(key) for key in (*crypto.pii_keys.values(), crypto.pii_index_key)}
    if configured & published:
        raise ValueError("env = prod refuses the published dev PII keys: configure your own")
    tokens = {token.strip().lower() for token in settings.origination.operator_token_sha256}
    if DEV_OPERATOR_TOKEN_SHA256 in tokens:
        raise ValueError("env = prod refuses the demo operator token (demo-operator)")


def _key_bytes(key_b64: str) -> bytes:
    """The key's bytes, however its base64 is written (a bad one is PiiCipher's to refuse)."""
    try:
        return base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        return key_b64.encode()


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _refuse_plain_http_off_loopback(http: HttpSettings) -> None:
    """Channel secrets sign requests but do not hide them: off loopback, production
    speaks TLS itself or says that a proxy in front ends it."""
    if http.host in _LOOPBACK_HOSTS or http.tls_cert_file or http.behind_tls_proxy:
        return
    raise ValueError(
        f"env = prod on {http.host} needs TLS: set http.tls_cert_file and http.tls_key_file, "
        "or http.behind_tls_proxy = true when a proxy in front terminates TLS"
    )
